"""``zoobench export``: each format round-trips through its own runtime to the stored probabilities.

The SavedModel, ONNX and LiteRT artifacts are loaded in a fresh Python process that imports no
zoobench module; the .keras file needs zoobench's layers (safe mode), so it is loaded in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_ensembles_export import make_model_run

from benchmark.cli.app import main
from benchmark.errors import ZoobenchError
from benchmark.store.runstore import RunStore, file_sha256
from ensembles.build import build_ensembles

# (key, format, model, out name): a member and an ensemble for the two formats with extras.
EXPORTS = [
    ("saved_model", "saved_model", "greedy", "greedy_sm"),
    ("onnx-member", "onnx", "m2", "m2.onnx"),  # m2 resizes inside itself
    ("onnx-ensemble", "onnx", "average-all", "average.onnx"),
    ("litert-member", "litert", "m1", "m1.tflite"),
    ("litert-ensemble", "litert", "stacking-logistic", "stack.tflite"),
]

# Run in a fresh interpreter: only numpy and each format's own runtime, as a deployment would.
# Each job answers on its own (probabilities or the error), so one broken runtime fails only its
# own checks. ``block`` names modules made unimportable first, as on a machine without them.
FRESH_LOADER = r"""
import json, sys, traceback
import numpy as np

jobs, block = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name in block:
    sys.modules[name] = None
out = {}
for job in jobs:
    try:
        x = np.load(job["x"]).astype(np.float32)
        fmt, path = job["format"], job["path"]
        if fmt == "onnx":
            import onnxruntime as ort
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            probs = session.run(None, {session.get_inputs()[0].name: x})[0]
        elif fmt == "litert":
            try:
                from ai_edge_litert.interpreter import Interpreter
            except ImportError:
                import tensorflow as tf
                Interpreter = tf.lite.Interpreter
            it = Interpreter(model_path=path)
            inp = it.get_input_details()[0]
            it.resize_tensor_input(inp["index"], x.shape)
            it.allocate_tensors()
            it.set_tensor(inp["index"], x)
            it.invoke()
            probs = it.get_tensor(it.get_output_details()[0]["index"])
        else:
            import tensorflow as tf
            serve = tf.saved_model.load(path).signatures["serving_default"]
            (name,) = serve.structured_input_signature[1]
            probs = next(iter(serve(**{name: tf.constant(x)}).values())).numpy()
        out[job["key"]] = {"probs": np.asarray(probs, dtype=np.float64).tolist()}
    except Exception:
        out[job["key"]] = {"error": traceback.format_exc(limit=3)}
ours = sorted(m for m in sys.modules if m.split(".")[0] in {"zoo", "benchmark", "ensembles", "reports"})
print(json.dumps({"results": out, "zoobench_modules": ours}))
"""


def _missing(fmt: str) -> str | None:
    from benchmark.runtimes import require_packages

    try:
        require_packages(fmt)
    except ZoobenchError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from ensembles.build import build_ensembles

    store = make_model_run(tmp_path_factory.mktemp("export") / "run")
    build_ensembles(store, {"stacker_cv": 2}, seed=0)
    return store.root


def export_and_load(run_dir: Path, folder: Path, exports: list, block: tuple = ()) -> dict:
    """Export each of ``exports`` that this machine can write, and load each in a fresh process.

    A format whose packages are missing (or made unimportable by ``block``, here and in the
    loader) is recorded as skipped with the one-line reason ``zoobench export`` gives. Each format
    loads in its own process (SavedModel's, which imports TensorFlow, starts while the others are
    still exported), so one runtime that fails to import cannot take another format's checks down.
    """
    from ensembles.deploy import export_model

    np.save(folder / "x.npy", RunStore(run_dir).load_array("x_test"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    saved = {name: sys.modules.get(name, _ABSENT) for name in block}
    try:
        for name in block:
            sys.modules[name] = None
        infos, skipped, by_format = {}, {}, {}
        loaders = []
        for key, fmt, model, name in exports:
            if reason := _missing(fmt):
                skipped[key] = reason
                continue
            infos[key] = export_model(run_dir, model, fmt, out=folder / name)
            job = {
                "key": key,
                "format": fmt,
                "path": infos[key]["path"],
                "x": str(folder / "x.npy"),
            }
            by_format.setdefault(fmt, []).append(job)
            if fmt == "saved_model":  # the slow start: launch it now
                loaders.append(_fresh(by_format.pop(fmt), block, folder, env))
    finally:
        for name, module in saved.items():
            if module is _ABSENT:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    loaders += [_fresh(jobs, block, folder, env) for jobs in by_format.values()]
    results, ours = {}, set()
    for loader in loaders:
        stdout, stderr = loader.communicate(timeout=300)
        assert loader.returncode == 0, stderr[-3000:]
        answer = json.loads(stdout.strip().splitlines()[-1])
        results.update(answer["results"])
        ours.update(answer["zoobench_modules"])
    fresh = {"results": results, "zoobench_modules": sorted(ours)}
    return {"infos": infos, "skipped": skipped, "fresh": fresh, "folder": folder}


_ABSENT = object()


def _fresh(jobs: list[dict], block: tuple, folder: Path, env: dict) -> subprocess.Popen:
    command = [sys.executable, "-c", FRESH_LOADER, json.dumps(jobs), json.dumps(list(block))]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=folder, env=env
    )


def _fresh_probs(exported: dict, key: str) -> np.ndarray:
    result = exported["fresh"]["results"][key]
    assert "error" not in result, result.get("error")
    return np.array(result["probs"])


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> dict:
    """Every format the machine can write, exported once, each loaded in a fresh process."""
    return export_and_load(run_dir, tmp_path_factory.mktemp("artifacts"), EXPORTS)


@pytest.mark.parametrize("key,fmt,model,name", EXPORTS, ids=[e[0] for e in EXPORTS])
def test_artifact_loaded_afresh_without_zoobench_predicts_the_stored_probs(
    exported, run_dir, key, fmt, model, name
):
    from ensembles.deploy import FORMATS, source_hash
    from ensembles.export import ensemble_members

    if key in exported["skipped"]:
        pytest.skip(exported["skipped"][key])
    assert exported["fresh"]["zoobench_modules"] == []  # the loader never touched zoobench
    store = RunStore(run_dir)
    entry = store.find(model)
    stored = entry.probs("test")
    got = _fresh_probs(exported, key)
    assert got.shape == stored.shape == (24, 10)
    tol = FORMATS[fmt].tolerance
    assert np.abs(got - stored).max() <= tol
    np.testing.assert_array_equal(got.argmax(1), stored.argmax(1))

    info = exported["infos"][key]
    out = exported["folder"] / name
    assert info["path"] == str(out) and out.exists()
    manifest = out / "export.json" if fmt == "saved_model" else Path(f"{out}.export.json")
    assert info["manifest"] == str(manifest)
    on_disk = json.loads(manifest.read_text())
    assert on_disk == json.loads(json.dumps(info))
    assert on_disk["format"] == fmt and on_disk["model"] == model
    assert on_disk["run"] == str(run_dir)
    assert on_disk["entry"] == {"kind": entry.kind, "id": entry.id, "name": entry.name}
    assert on_disk["images_compared"] == 24 and 0 <= on_disk["max_abs_diff"] <= tol
    assert on_disk["tolerance"] == tol
    assert on_disk["input"]["shape"] == [None, 32, 32, 3]
    assert on_disk["output"]["shape"] == [None, 10]
    assert on_disk["source_sha256"] == source_hash(entry, ensemble_members(store, entry))[0]
    assert on_disk["versions"]["keras"] and on_disk["size_bytes"] > 1000
    if fmt != "saved_model":
        assert on_disk["artifact_sha256"] == file_sha256(out)
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_a_missing_runtime_skips_only_its_own_format_and_the_saved_model_still_runs(
    run_dir, tmp_path
):
    """On a machine without ai-edge-litert, the LiteRT checks skip naming the extra, and the
    SavedModel export beside them is still written, loaded afresh and compared."""
    exports = [e for e in EXPORTS if e[1] in ("saved_model", "litert")]
    got = export_and_load(run_dir, tmp_path, exports, block=("ai_edge_litert",))
    litert = [e[0] for e in exports if e[1] == "litert"]
    assert sorted(got["skipped"]) == sorted(litert)
    for key in litert:
        assert got["skipped"][key] == (
            '--format litert needs ai-edge-litert: pip install "zoobench[litert]"'
        )
    assert sorted(got["fresh"]["results"]) == ["saved_model"]
    stored = RunStore(run_dir).find("greedy").probs("test")
    assert np.abs(_fresh_probs(got, "saved_model") - stored).max() <= 1e-4
    assert not list(tmp_path.glob("*.tflite"))


def test_keras_best_via_cli_loads_in_safe_mode_and_refuses_to_overwrite(capsys, run_dir, tmp_path):
    import keras

    import zoo

    store = RunStore(run_dir)
    best = store.best_pointer()
    entry = store.find(best["id"])
    out = tmp_path / "deploy" / "best.keras"
    code = main(["export", str(run_dir), "--format", "keras", "--out", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert stdout.splitlines() == [
        f"exported {entry.kind} {entry.name!r} (best) of {run_dir}",
        f"  path:     {out}",
        "  format:   keras",
        f"  size:     {stdout.split('size:')[1].split()[0]}",
        "  input:    float32 RGB 32x32x3, values 0..255; output: 10 class probabilities",
        f"  check:    24 stored test images, max |diff| "
        f"{json.loads(Path(f'{out}.export.json').read_text())['max_abs_diff']:.2g} "
        "(tolerance 0.0001)",
        f"  manifest: {out}.export.json",
    ]
    zoo.list_models()  # zoobench's layers, as the .keras contract says
    model = keras.saving.load_model(out, safe_mode=True)
    x = store.load_array("x_test").astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), entry.probs("test"), atol=1e-5)

    before = file_sha256(out)
    code = main(["export", str(run_dir), "--model", "m0", "--format", "keras", "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.strip() == f"zoobench: error: --out {out} already exists; pass --force to replace it"
    assert file_sha256(out) == before

    code = main(["export", str(run_dir), "--model", "m0", "--out", str(out), "--force", "--json"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    info = json.loads(stdout)
    assert info["entry"] == {"kind": "member", "id": "m0", "name": "tiny0"}
    assert file_sha256(out) == info["artifact_sha256"] != before
    assert sorted(p.name for p in out.parent.iterdir()) == ["best.keras", "best.keras.export.json"]


def test_saved_model_folder_is_replaced_whole_with_force(exported, run_dir):
    from ensembles.deploy import export_model

    if "saved_model" in exported["skipped"]:
        pytest.skip(exported["skipped"]["saved_model"])
    out = Path(exported["infos"]["saved_model"]["path"])
    with pytest.raises(ZoobenchError, match="already exists; pass --force to replace it"):
        export_model(run_dir, "m1", "saved_model", out=out)
    (out / "stray.txt").write_text("left from the old export")
    info = export_model(run_dir, "m1", "saved_model", out=out, force=True, images=5)
    assert info["entry"]["id"] == "m1" and info["images_compared"] == 5
    assert not (out / "stray.txt").exists() and (out / "saved_model.pb").is_file()
    assert json.loads((out / "export.json").read_text())["entry"]["id"] == "m1"
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_a_missing_format_package_is_one_line_naming_the_extra(
    capsys, monkeypatch, run_dir, tmp_path
):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    expected = _missing("onnx")
    assert expected and expected.endswith('pip install "zoobench[onnx]"')
    if "not installed" in expected:  # tf2onnx and onnx are here: only onnxruntime is named missing
        assert expected == (
            "--format onnx needs tf2onnx, onnx and onnxruntime (onnxruntime not installed): "
            'pip install "zoobench[onnx]"'
        )
    out = tmp_path / "m.onnx"
    code = main(["export", str(run_dir), "--format", "onnx", "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 2 and err.strip() == f"zoobench: error: {expected}"
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "tensorflow.lite", None)
    code = main(["export", str(run_dir), "--format", "litert", "--out", str(tmp_path / "m.tflite")])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.strip() == (
        'zoobench: error: --format litert needs ai-edge-litert: pip install "zoobench[litert]"'
    )


def test_unknown_run_model_and_bad_out_are_one_line_and_write_nothing(capsys, run_dir, tmp_path):
    def export(*args: str) -> tuple[int, str]:
        code = main(["export", *map(str, args)])
        return code, capsys.readouterr().err.strip()

    code, err = export(run_dir, "--model", "resnet999", "--out", tmp_path / "x.keras")
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(
        f"zoobench: error: unknown model 'resnet999' in run {run_dir}; choose best"
    )
    assert "m0, m1, m2" in err and "stacking-logistic" in err
    code, err = export(tmp_path / "nope", "--out", tmp_path / "x.keras")
    assert code == 2 and err == (
        f"zoobench: error: unknown run {tmp_path / 'nope'}: no run.json there (see `zoobench run`)"
    )
    code, err = export(run_dir, "--format", "onnx", "--out", tmp_path / "x.keras")
    assert code == 2 and err == (
        f"zoobench: error: --out {tmp_path / 'x.keras'} must end in .onnx for --format onnx "
        "(its runtime reads .onnx files)"
    )
    code, err = export(run_dir, "--format", "saved_model", "--out", tmp_path / "x.tflite")
    assert code == 2 and "writes a folder; give a folder path" in err
    code, err = export(run_dir, "--images", "0", "--out", tmp_path / "x.keras")
    assert code == 2 and err == "zoobench: error: --images must be at least 1, got 0"
    assert list(tmp_path.iterdir()) == []


def test_an_artifact_that_disagrees_with_the_run_is_not_written(monkeypatch, run_dir, tmp_path):
    from benchmark import runtimes
    from ensembles import deploy

    real = runtimes.RUNTIMES["keras"]
    monkeypatch.setitem(runtimes.RUNTIMES, "keras", lambda path, x: real(path, x) + 0.01)
    out = tmp_path / "bad.keras"
    with pytest.raises(ZoobenchError) as info:
        deploy.export_model(run_dir, "m1", "keras", out=out)
    assert str(info.value) == (
        "the exported keras model of 'tiny1' differs from the run's stored test probabilities by "
        f"0.01 (tolerance 0.0001); nothing was written to {out}"
    )
    assert list(tmp_path.iterdir()) == []  # neither the artifact, its manifest nor a temp folder


def test_members_with_opencv_preprocessing_are_refused_naming_the_steps(tmp_path):
    from ensembles.build import build_ensembles
    from ensembles.deploy import export_model

    store = make_model_run(
        tmp_path / "run", n_val=20, n_test=8, preprocess=[{"name": "clahe", "clip_limit": 3.0}]
    )
    build_ensembles(store, {"methods": ["average-all"], "min_members": 2}, seed=0)
    with pytest.raises(ZoobenchError) as info:
        export_model(store.root, "m0", "keras", out=tmp_path / "m0.keras")
    assert str(info.value) == (
        "cannot export 'tiny0': its members were trained on images preprocessed with "
        "clahe(clip_limit=3.0) (OpenCV code outside the model, which no exported model can "
        "hold); use `zoobench predict` instead"
    )
    with pytest.raises(ZoobenchError) as info:
        export_model(store.root, "average-all", "keras", out=tmp_path / "avg.keras")
    assert str(info.value) == (
        "cannot export 'average-all': its members use different OpenCV preprocessing "
        "(m0: clahe(clip_limit=3.0); m1: none; m2: none), which no exported model can hold; "
        "use `zoobench predict` instead"
    )
    info = export_model(store.root, "m1", "keras", out=tmp_path / "m1.keras")  # no steps: fine
    assert info["images_compared"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m1.keras", "m1.keras.export.json", "run"]


def test_onnx_export_of_exact_gelu_converts_erfc(tmp_path):
    """Keras's exact GELU (fastnet's default) computes through TensorFlow's Erfc, which tf2onnx
    1.17 cannot convert by itself; deploy teaches it Erfc = 1 - Erf."""
    pytest.importorskip("tf2onnx")
    ort = pytest.importorskip("onnxruntime")
    import keras

    from benchmark import runtimes

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="gelu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    images = np.random.default_rng(0).uniform(0, 255, (5, 8, 8, 3)).astype("float32")
    model(images[:1])
    path = tmp_path / "gelu.onnx"
    runtimes.write_artifact(model, runtimes.FORMATS["onnx"], path)
    session = ort.InferenceSession(str(path))
    got = session.run(None, {session.get_inputs()[0].name: images})[0]
    assert np.abs(got - model.predict(images, verbose=0)).max() < 1e-5


# ---- the holes of issue 23 -----------------------------------------------------------------------
def test_force_replaces_only_an_earlier_export_and_refuses_anything_else(capsys, run_dir, tmp_path):
    """``--force --out DIR`` deleted any DIR, export or not; now what has no export manifest (a
    user's folder, a file, an export whose manifest is gone) stays, with one line saying why."""
    run = run_dir
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"not zoobench's")
    mine = tmp_path / "notes.keras"
    mine.write_text("a user's file")
    old = tmp_path / "old.onnx"  # an export whose manifest was removed: no longer recognisable
    old.write_bytes(b"onnx?")
    for fmt, out in (("saved_model", folder), ("keras", mine), ("onnx", old)):
        argv = ["export", str(run), "--model", "m0", "--format", fmt, "--out", str(out)]
        code = main([*argv, "--force"])
        _, err = capsys.readouterr()
        assert code == 2
        assert err.strip().splitlines() == [
            f"zoobench: error: --out {out} is not an earlier zoobench export (no readable "
            f"{'export.json' if fmt == 'saved_model' else out.name + '.export.json'} manifest): "
            "--force replaces only those; choose another --out"
        ]
    assert (folder / "holiday.jpg").read_bytes() == b"not zoobench's"
    assert mine.read_text() == "a user's file" and old.read_bytes() == b"onnx?"


def test_a_model_name_that_leaves_the_run_folder_is_refused(capsys, tmp_path):
    from fake_run import make_fake_run

    from ensembles.predictor import check_target

    store = make_fake_run(tmp_path / "run")
    build_ensembles(store, {"methods": ["average-all"]}, seed=0)
    make_fake_run(tmp_path / "other")  # another run beside it, with members of its own
    for name in ("../ensembles/average-all", "../../other/members/member00", "..", "a/b"):
        with pytest.raises(ZoobenchError, match="leaves the run folder is refused"):
            check_target(store.root, name)
        code = main(["export", str(store.root), "--model", name, "--out", str(tmp_path / "x")])
        _, err = capsys.readouterr()
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert f"{name!r} is not a member ID or ensemble name of run {store.root}" in err
    assert check_target(store.root, "average-all")["kind"] == "ensemble"  # names still work
    assert not (tmp_path / "x").exists()
