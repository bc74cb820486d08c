"""User-caused failures are one line with exit status 2 and no traceback (issue 12, items 6, 7, 9).

Each test reproduces one report of the issue: what it printed before is in its docstring.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import CIFAR10_CLASSES, write_class_folders

from benchmark.cli.app import main
from benchmark.errors import DataError
from benchmark.modelfile import save_model
from benchmark.store.runstore import RunStore


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One cache folder for the module: the decoded tiny set and the probes' calibration."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _isolated_cache(cache, monkeypatch):
    monkeypatch.setenv("ZOOBENCH_CACHE", str(cache))


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    """The single ``zoobench: error:`` line of ``err`` (asserting there is exactly one, no traceback)."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("zoobench:")]
    assert len(lines) == 1, err
    assert lines[0].startswith("zoobench: error: "), err
    return lines[0]


PROFILE = """
name = "errors"
[data]
train_size = 40
val_size = 20
test_size = 20
[training]
epochs = 1
batch_size = 20
"""


def write_profile(path: Path, member: str) -> Path:
    path.write_text(PROFILE + "[[members]]\n" + member)
    return path


# ---- item 6: options that name a file where a folder belongs -----------------------------------


def test_out_pointing_at_a_file_is_one_line(capsys, tmp_path, tiny_jpg):
    """Reproduces `--out` at an existing file: it said `internal error: FileExistsError`, exit 1.
    Now `--plan` says it too, before any data is read."""
    target = tmp_path / "results.txt"
    target.write_text("not a folder")
    for extra in (["--plan"], []):
        code, _, err = run_cli(
            capsys, "run", "smoke", "--out", target, "--data-dir", tiny_jpg, *extra
        )
        assert code == 2
        assert one_line_error(err) == (
            f"zoobench: error: --out {target} is a file, not a folder: choose another --out"
        )
    assert target.read_text() == "not a folder"


def test_a_file_as_data_dir_is_called_a_file(capsys, tmp_path):
    """Reproduces a file given as `--data-dir`: it was reported as "does not exist"."""
    data = tmp_path / "cifar.zip"
    data.write_bytes(b"PK")
    code, _, err = run_cli(
        capsys, "run", "smoke", "--plan", "--out", tmp_path / "run", "--data-dir", data
    )
    assert code == 2
    line = one_line_error(err)
    assert f"data folder {data} is a file, not a folder" in line
    assert "does not exist" not in line


# ---- item 9: a dataset needs two classes -------------------------------------------------------


def test_a_one_class_folder_dataset_is_refused(tmp_path):
    """Reproduces a `folder` dataset with one class folder: it was accepted (accuracy 1.000)."""
    from benchmark.data.datasets import load

    root = write_class_folders(tmp_path / "one", classes=("cat",), per_class=(6, 2))
    with pytest.raises(DataError, match=r"one has 1 class folder \(cat\); .* at least two classes"):
        load("folder", data_dir=root)
    two = write_class_folders(tmp_path / "two", classes=("cat", "dog"), per_class=(6, 2))
    assert load("folder", data_dir=two, val_fraction=0.5).num_classes == 2


# ---- item 6: a model file with code safe mode refuses ------------------------------------------


def lambda_model():
    import keras

    image = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 255)(image)
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)  # Python code in the file
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(image, keras.layers.Dense(10, activation="softmax", name="probs")(x))


@pytest.fixture(scope="module")
def lambda_run(tmp_path_factory) -> RunStore:
    """A run whose one member's model.keras holds a Lambda layer."""
    rng = np.random.default_rng(0)
    store = RunStore(tmp_path_factory.mktemp("lambda") / "run")
    y = (np.arange(20) % 10).astype(np.int64)
    x = rng.integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8)
    for name, arr in {
        "y_val": y,
        "y_test": y,
        "x_test": x,
        "sample_x": x[:5],
        "sample_y": y[:5],
    }.items():
        store.save_array(name, arr)
    store.write_run(
        {
            "name": "lambda",
            "seed": 0,
            "data": {"class_names": list(CIFAR10_CLASSES), "input_shape": [32, 32, 3]},
        }
    )
    model = lambda_model()
    save_model(model, store.member_dir("m0") / "model.keras")
    probs = model.predict(x, verbose=0)
    store.write_entry(
        store.member_dir("m0"),
        config={"id": "m0", "name": "lambda net", "architecture": "custom", "preprocess": []},
        metrics={
            "status": "done",
            "reason": "",
            "val_accuracy": 0.1,
            "val_loss": 2.3,
            "finished_at": "2026-01-01T00:00:00Z",
        },
        val_probs=probs,
        test_probs=probs,
    )
    return store


def refusal(path: Path) -> str:
    return (
        f"{path} contains code (a Lambda layer) that safe mode refuses to load; zoobench loads "
        "only Keras's own layers and those the zoo registers"
    )


def test_predict_refuses_an_unsafe_model_in_one_line(capsys, lambda_run, tmp_path):
    """Reproduces `zoobench predict` on a run whose model holds a Lambda layer: it was refused as
    `internal error: ValueError: Requested the deserialization of a Lambda layer ...`, exit 1."""
    import cv2

    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    code, out, err = run_cli(capsys, "predict", image, "--run", lambda_run.root, "--model", "m0")
    assert code == 2 and out == ""
    line = one_line_error(err)
    assert line.startswith("zoobench: error: member m0: ")
    assert refusal(lambda_run.member("m0").model_path) in line
    assert "internal error" not in err


def test_a_member_backbone_with_code_is_refused_in_one_line(lambda_run):
    """Reproduces a `member:` backbone holding a Lambda layer: the error carried 200 characters of
    Keras's message instead of saying what is wrong with the file."""
    from benchmark.errors import ZoobenchError
    from benchmark.train.transfer import load_backbone

    folder = lambda_run.member_dir("m0")
    with pytest.raises(ZoobenchError) as info:
        load_backbone(f"member:{folder}", None, (32, 32, 3), 10)
    assert str(info.value) == f"member:{folder}: " + refusal(folder / "model.keras") + (
        " (a Lambda layer or another Python function in a model is not allowed)"
    )


def test_a_failed_export_logs_one_line_and_keeps_the_traceback(lambda_run, caplog):
    """Reproduces a failed export of the best model: a full traceback through a WARNING log.
    Now one warning line; the traceback is in ``ensembles/best/error.txt``."""
    from ensembles.export import write_best

    with caplog.at_level(logging.WARNING):
        info = write_best(lambda_run, lambda_run.member("m0"))
    assert info["model"] is None
    assert info["reason"].startswith("export failed: ZoobenchError: member m0: ")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].exc_info is None
    message = warnings[0].getMessage()
    assert "\n" not in message and "exporting lambda net as one model failed" in message
    error = lambda_run.best_dir / "error.txt"
    assert f"(traceback in {error})" in message
    assert error.read_text().startswith("Traceback (most recent call last)")
    assert "safe mode refuses" in error.read_text()


# ---- item 6: failures a run survives: one line, the traceback in error.txt ---------------------


def test_a_failed_member_logs_one_line_and_keeps_the_traceback(tmp_path, caplog):
    """Reproduces a member whose training raises: a full traceback through a WARNING log.
    Now one warning line with the reason; the traceback is the member's ``error.txt``."""
    from benchmark.run.members import MemberTrainer

    store = RunStore(tmp_path / "run")
    lines: list[str] = []
    trainer = MemberTrainer(store, None, seed=0, clock=None, progress=lines.append)

    def train():
        raise RuntimeError("the GPU caught fire\nsecond line")

    from benchmark.store.records import MemberConfig

    config = MemberConfig(id="abc", name="seed_cnn")
    with caplog.at_level(logging.WARNING):
        trainer.keep_or_train("abc", config, {}, train)
    entry = store.member("abc")
    assert (
        entry.status == "failed" and entry.metrics["reason"] == "RuntimeError: the GPU caught fire"
    )
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].exc_info is None
    error = store.member_dir("abc") / "error.txt"
    assert warnings[0].getMessage() == (
        f"member seed_cnn failed: RuntimeError: the GPU caught fire (traceback in {error})"
    )
    text = error.read_text()
    assert text.startswith("Traceback (most recent call last)") and "second line" in text
    assert len(lines) == 1 and "FAILED" in lines[0]  # the progress line, on stdout
    assert lines[0].endswith("(RuntimeError: the GPU caught fire)")


def test_failed_ensembles_and_report_print_one_line_each(tmp_path, caplog, monkeypatch):
    """Reproduces a run whose ensembles (or report) raise: a traceback through a WARNING log.
    Now one progress line each, pointing at ``<run>/error.txt`` with the traceback."""
    from fake_run import make_fake_run

    import ensembles
    import reports.build
    from benchmark.config.profiles import load_profile
    from benchmark.run.runner import Runner

    make_fake_run(tmp_path / "run")
    lines: list[str] = []
    runner = Runner(load_profile("smoke"), tmp_path / "run", progress=lines.append)

    def boom(*args, **kwargs):
        raise RuntimeError("boom\nmore")

    monkeypatch.setattr(ensembles, "build_ensembles", boom)
    monkeypatch.setattr(reports.build, "write_report", boom)
    with caplog.at_level(logging.WARNING):
        runner._ensembles()
        assert runner._report() is None
    error = tmp_path / "run" / "error.txt"
    assert lines == [
        f"ensembles: FAILED (RuntimeError: boom); the members are kept (traceback in {error})",
        "report: scoring the leaderboard and drawing the figures",
        f"report: FAILED (RuntimeError: boom); rebuild it with `zoobench report {tmp_path / 'run'}` "
        f"(traceback in {error})",
    ]
    assert not [r for r in caplog.records if r.exc_info]
    assert error.read_text().startswith("Traceback (most recent call last)")


# ---- item 7: checks before training ------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (
            'architecture = "seed_cnn"\nhp = { widht = 0.5 }\n',
            "member 'seed_cnn': hp 'widht': seed_cnn has no such hyperparameter; did you mean "
            "'width'? (it has: activation, batch_norm, dense_units, dropout, l1, l2, width)",
        ),
        (
            'architecture = "seed_cnn"\nhp = { width = -2 }\n',
            "member 'seed_cnn': hp width = -2 is not allowed: seed_cnn's width is a positive number "
            "(the search's grid: 0.5, 1.0, 2.0)",
        ),
        (
            'architecture = "seed_cnn"\nhp = { dropout = 0.9 }\n',
            "member 'seed_cnn': hp dropout = 0.9 is not allowed: seed_cnn's dropout is a number "
            "from 0.0 to 0.5",
        ),
        (
            'architecture = "seed_cnn"\nhp = { batch_norm = 1 }\n',
            "member 'seed_cnn': hp batch_norm = 1 is not allowed: seed_cnn's batch_norm is true or false",
        ),
        (
            'architecture = "seed_cnn"\nname = "searched"\nhp = { widht = 0.5 }\ntune = true\n',
            "member 'searched': hp 'widht': seed_cnn has no such hyperparameter",
        ),
    ],
    ids=[
        "unknown-name",
        "width-out-of-choices",
        "float-out-of-range",
        "not-a-bool",
        "tuned-member",
    ],
)
def test_plan_refuses_hp_training_would(capsys, tmp_path, tiny_jpg, member, message):
    """Reproduces hp mistakes that passed `--plan` and failed (or trained silently) only once the
    run reached the member: `widht`, `width = -2`, `dropout = 0.9`, `batch_norm = 1`, and a tuned
    member's `widht` (a pinned key the architecture never reads: searched silently). Now `--plan`
    refuses each, naming the member, the key and what is allowed."""
    profile = write_profile(tmp_path / "p.toml", member)
    code, _, err = run_cli(
        capsys, "run", profile, "--plan", "--out", tmp_path / "run", "--data-dir", tiny_jpg
    )
    assert code == 2
    assert message in one_line_error(err)


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (
            'architecture = "seed_cnn"\npreprocess = [{ name = "denoise", method = "median" }]\n',
            "preprocess step 'denoise': method must be one of nlmeans, bilateral, gaussian, got 'median'",
        ),
        (
            'architecture = "seed_cnn"\naugment = [{ name = "cutout", size = -8 }]\n',
            "augment step 'cutout': size must be a whole number >= 1, got -8",
        ),
    ],
    ids=["denoise-median", "cutout-negative"],
)
def test_plan_refuses_bad_step_parameters(capsys, tmp_path, tiny_jpg, member, message):
    """The issue's `denoise method = "median"` and `cutout size = -8` passed `--plan`; the profile
    parser (benchmark.config.schema) refuses them now, before any data is read: this guards that."""
    profile = write_profile(tmp_path / "p.toml", member)
    code, _, err = run_cli(
        capsys, "run", profile, "--plan", "--out", tmp_path / "run", "--data-dir", tiny_jpg
    )
    assert code == 2
    assert message in one_line_error(err)


def test_a_run_without_budget_checks_hp_before_training(capsys, tmp_path, tiny_jpg):
    """Reproduces `zoobench run` (no budget, so no probes) training members before it reached the
    one with a typo. Now the run stops at the start, with no member trained and no run.json
    written (which would make the corrected profile's rerun "another run")."""
    profile = tmp_path / "p.toml"
    profile.write_text(
        PROFILE + '[[members]]\narchitecture = "seed_cnn"\n'
        '[[members]]\narchitecture = "seed_cnn"\nname = "typo"\nhp = { widht = 1.0 }\n'
    )
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "run", profile, "--out", out, "--data-dir", tiny_jpg)
    assert code == 2
    assert "member 'typo': hp 'widht'" in one_line_error(err)
    assert not any((out / "members").glob("*/metrics.json"))
    assert "done" not in stdout
    # refused before the folder became a run: the corrected profile is not "another run" there
    assert not (out / "run.json").exists() and not (out / "data").exists()


def test_a_valid_member_passes_the_check():
    """The check accepts what the architecture declares, including a tuned member's fixed keys."""
    from benchmark.config.profiles import load_profile
    from benchmark.tune.hpspace import check_spec

    for spec in load_profile("smoke").members:
        check_spec(spec, (32, 32, 3), 10)
