"""The profile schema: plain data checked once, when a profile is parsed, for every table.

A profile loads where Keras and TensorFlow cannot be imported; typos in [ensembles] and [report]
fail at parse; feature extraction's head search has one option name (``head_trials``) and one
default, which is what the planner reads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmark.config import schema
from benchmark.config.profiles import load_profile, parse_profile
from benchmark.errors import ZoobenchError

REPO = Path(__file__).resolve().parents[1]
LITE = {"architecture": "efficientnet_lite0", "strategy": "feature-extraction"}
BASE = {"members": [{"architecture": "seed_cnn"}]}

HIDE_BACKENDS = REPO / "tests" / "no_tensorflow"  # its sitecustomize hides what we name


# Proof that the child cannot import them (else the test proves nothing), and that it never did.
BEFORE = """
import sys
for name in ("keras", "tensorflow"):
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{name} is importable: the test proves nothing")
"""
AFTER = """
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("keras", "tensorflow", "jax", "torch"))
assert not heavy, heavy
"""


def run_without_backends(code: str, cwd: Path, cache: Path | None = None):
    """``python -c code`` in a child where importing Keras, TensorFlow, JAX or PyTorch fails;
    the child fails unless those imports really fail and ``code`` imported none of them."""
    env = {
        **os.environ,
        "PYTHONPATH": f"{HIDE_BACKENDS}{os.pathsep}{REPO}",
        "ZOOBENCH_TEST_HIDDEN": "keras,tensorflow,jax,jaxlib,torch,keras_tuner,tf_keras",
    }
    if cache is not None:
        env["ZOOBENCH_CACHE"] = str(cache)
    code = BEFORE + textwrap.dedent(code) + AFTER
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def test_a_profile_loads_where_keras_and_tensorflow_cannot_be_imported(tmp_path):
    mine = tmp_path / "mine.toml"
    mine.write_text(
        '[[members]]\narchitecture = "seed_cnn"\naugment = [{ name = "cutout", size = 8 }]\n'
        '[ensembles]\nmethods = ["greedy"]\n[report]\nenabled = false\n'
    )
    code = f"""
        from benchmark.config.profiles import load_profile, shipped_profiles

        for name in shipped_profiles():
            load_profile(name, check_architectures=False)
        mine = load_profile({str(mine)!r}, check_architectures=False)
        assert mine.ensembles["methods"] == ["greedy"] and not mine.report_enabled
        print("loaded")
        """
    done = run_without_backends(code, tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "loaded", done.stderr[-2000:]


def _prime_zoo_index(cache: Path, monkeypatch) -> None:
    """Write the zoo index into ``cache`` from this (Keras-capable) process."""
    import zoo.index

    monkeypatch.setenv("ZOOBENCH_CACHE", str(cache))
    models = zoo.index.index(refresh=True)
    assert {"resnet20", "efficientnet_lite0"} <= set(models)
    assert zoo.index.index_path().is_file()


def test_a_profile_checks_its_architectures_where_keras_cannot_be_imported(tmp_path, monkeypatch):
    """Issue 11: with the zoo index cached, ``load_profile`` (architectures checked, the default)
    runs where importing Keras or TensorFlow fails; a misspelt name still fails with the hint."""
    cache = tmp_path / "cache"
    _prime_zoo_index(cache, monkeypatch)
    typo = tmp_path / "typo.toml"
    typo.write_text('[[members]]\narchitecture = "resnet2"\n')
    code = f"""
        from benchmark.errors import ZoobenchError
        from benchmark.config.profiles import load_profile

        quick = load_profile("cpu-quick")
        kinds = {{m.architecture: bool(m.strategy) for m in quick.members}}
        assert kinds["efficientnet_lite0"] and not kinds["fastnet"], kinds
        try:
            load_profile({str(typo)!r})
        except ZoobenchError as exc:
            print("error:", exc)
        print("loaded")
        """
    done = run_without_backends(code, tmp_path, cache)
    assert done.returncode == 0, done.stderr[-2000:]
    error, loaded = done.stdout.strip().splitlines()
    assert loaded == "loaded"
    assert error.startswith("error: profile ") and "typo.toml: members[0].architecture: " in error
    assert "unknown architecture 'resnet2'; did you mean resnet20" in error


def test_zoo_list_answers_from_the_cache_where_keras_cannot_be_imported(tmp_path, monkeypatch):
    """Issue 14 item 6: once the catalogue is cached, ``zoobench zoo list`` builds nothing and
    imports no Keras (the counts here come from a stand-in counter, so no model is built)."""
    import zoo.catalog
    import zoo.index

    cache = tmp_path / "cache"
    _prime_zoo_index(cache, monkeypatch)
    monkeypatch.setattr(
        zoo.catalog,
        "summary_row",
        lambda name, num_classes=10: {
            "name": name,
            "kind": zoo.get(name).kind,
            "family": zoo.get(name).family,
            "params": 1234,
            "flops": 5_000_000,
            "input_size": 32,
            "note": "",
        },
    )
    assert len(zoo.catalog.catalog()) == len(zoo.index.index())
    code = """
        from benchmark.cli.app import main

        assert main(["zoo", "list", "--family", "resnet"]) == 0
        """
    done = run_without_backends(code, tmp_path, cache)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| resnet20 " in done.stdout and "1.23k" in done.stdout, done.stdout


def test_the_schema_module_imports_nothing_heavy():
    code = (
        "import sys, benchmark.config.schema, benchmark.config.profiles; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('keras', 'tensorflow', 'jax', 'torch', 'keras_tuner')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"ensembles": {"top_kk": 3}},
            r"^profile my\.toml: ensembles\.top_kk: unknown key \(known: .*enabled, .*top_k\)$",
        ),
        (
            {"ensembles": {"enabled": False, "stacker": "svm"}},
            r"my\.toml: ensembles\.stacker: must be one of logistic, mlp, got \'svm\'$",
        ),
        (
            {"ensembles": {"enabled": "no"}},
            r"my\.toml: ensembles\.enabled: must be true or false, got \'no\'$",
        ),
        (
            {"ensembles": {"methods": ["blend"]}},
            r"my\.toml: ensembles\.methods: must be a non-empty list .*got \[\'blend\'\]$",
        ),
        (
            {"report": {"enabeld": False}},
            r"^profile my\.toml: report\.enabeld: unknown key \(known: enabled\)$",
        ),
        ({"report": {"enabled": 1}}, r"my\.toml: report\.enabled: must be true or false, got 1$"),
        ({"report": []}, r"my\.toml: report: must be a table"),
    ],
)
def test_ensembles_and_report_are_checked_at_parse(change, message):
    with pytest.raises(ZoobenchError, match=message) as info:
        parse_profile({**BASE, **change}, "my.toml", check_architectures=False)
    assert "\n" not in str(info.value)


def test_ensembles_and_report_carry_their_defaults():
    profile = parse_profile(BASE, "my.toml", check_architectures=False)
    assert profile.ensembles == schema.ENSEMBLES_TABLE and profile.report == schema.REPORT_DEFAULTS
    assert profile.ensembles_enabled and profile.report_enabled
    assert profile.ensemble_config == schema.resolve_ensembles({})
    off = parse_profile(
        {**BASE, "ensembles": {"enabled": False, "top_k": 2}}, "my.toml", check_architectures=False
    )
    assert not off.ensembles_enabled and off.ensemble_config["top_k"] == 2
    assert "enabled" not in off.ensemble_config


def test_ensembles_build_reads_the_schema():
    from ensembles import build

    assert build.DEFAULTS is schema.ENSEMBLE_DEFAULTS and build.METHODS == schema.ENSEMBLE_METHODS
    assert build.resolve_config({}) == schema.resolve_ensembles({})


def test_max_trials_is_refused_and_names_head_trials():
    raw = {"members": [{**LITE, "transfer": {"max_trials": 3}}]}
    with pytest.raises(
        ZoobenchError,
        match=r"^profile my\.toml: members\[0\]\.transfer\.max_trials: unknown key "
        r"\(max_trials is now head_trials\)$",
    ):
        parse_profile(raw, "my.toml", check_architectures=False)


def test_head_trials_has_one_default_and_the_planner_reads_it():
    from benchmark.train import transfer

    assert transfer.DEFAULT_OPTIONS is schema.TRANSFER_DEFAULTS
    assert "max_trials" not in schema.TRANSFER_DEFAULTS
    raw = {"members": [dict(LITE, name="a"), {**LITE, "name": "b", "transfer": {"head_trials": 2}}]}
    a, b = parse_profile(raw, "my.toml", check_architectures=False).members
    assert a.transfer == {} and a.transfer_options["head_trials"] == 6
    assert a.transfer_options == schema.TRANSFER_DEFAULTS
    assert b.transfer == {"head_trials": 2} and b.transfer_options["head_trials"] == 2
    with pytest.raises(
        ZoobenchError, match=r"transfer\.head_trials: must be a whole number >= 1, got 0$"
    ):
        parse_profile(
            {"members": [{**LITE, "transfer": {"head_trials": 0}}]},
            "my.toml",
            check_architectures=False,
        )


def test_shipped_transfer_tables_are_kept_as_written():
    """A member's ``transfer`` is part of its id: the parser records it, defaults go elsewhere."""
    quick = load_profile("cpu-quick", check_architectures=False)
    lite = [m for m in quick.members if m.strategy][0]
    assert lite.transfer == {"head_trials": 2, "feature_levels": 5, "flip_features": True}
    assert lite.transfer_options["head_trials"] == 2 and lite.transfer_options["patience"] == 5
    assert lite.transfer_options["extract_runtime"] == "auto"


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (
            {"preprocess": [{"name": "denoise", "method": "median"}]},
            r"members\[0\]: preprocess step 'denoise': method must be one of nlmeans, bilateral, "
            r"gaussian, got 'median'",
        ),
        (
            {"preprocess": [{"name": "clahe", "tile_grid": 0}]},
            r"tile_grid must be a whole number >= 1",
        ),
        (
            {"augment": [{"name": "cutout", "size": -8}]},
            r"members\[0\]: augment step 'cutout': size must be a whole number >= 1, got -8",
        ),
        (
            {"augment": [{"name": "cutout", "probability": 1.5}]},
            r"probability must be a number in "
            r"\[0, 1\], got 1\.5",
        ),
        ({"augment": [{"name": "flip", "mode": "sideways"}]}, r"mode must be one of horizontal"),
        ({"augment": [{"name": "mixup", "alpha": 0}]}, r"alpha must be a number > 0, got 0"),
        (
            {"augment": [{"name": "random_erasing", "min_area": 0.5, "max_area": 0.2}]},
            r"min_area 0\.5 exceeds max_area 0\.2",
        ),
        ({"training": {"augment": [{"name": "pad_crop", "padding": True}]}}, r"padding must be"),
    ],
)
def test_step_values_are_checked_at_parse(member, message):
    raw = {"members": [{"architecture": "seed_cnn", **member}]}
    with pytest.raises(ZoobenchError, match=message):
        parse_profile(raw, "my.toml", check_architectures=False)


@pytest.mark.parametrize(
    ("search", "message"),
    [
        (
            {"optimizer": ["adam", "adagrad"]},
            r"tuner\.search\.optimizer: must be one of adam, .*got 'adagrad'$",
        ),
        (
            {"learning_rate": {"min": 0.0, "max": 0.1}},
            r"tuner\.search\.learning_rate: must be a number > 0, got 0\.0$",
        ),
        ({"learning_rate": {"min": 0.1, "max": 0.01}}, r"needs min < max"),
        ({"learning_rate": {"min": 0.01, "max": 0.1, "sampling": "exp"}}, r"sampling: must be one"),
        ({"augment": {"big": [{"name": "cutout", "size": 0}]}}, r"search\.augment\.big: .*size"),
    ],
)
def test_search_values_are_checked_at_parse(search, message):
    raw = {**BASE, "tuner": {"search": search}}
    with pytest.raises(ZoobenchError, match=message):
        parse_profile(raw, "my.toml", check_architectures=False)


def test_valid_step_values_pass_with_defaults_filled_in():
    from benchmark.data.augment import validate_policy
    from benchmark.data.preprocess import validate_steps

    policy = validate_policy([{"name": "cutout", "size": 4}, {"name": "rotate", "degrees": 10}])
    assert policy[0] == {"name": "cutout", "size": 4, "probability": 1.0}
    steps = validate_steps([{"name": "clahe", "clip_limit": 3}, {"name": "denoise"}])
    assert steps[1]["method"] == "nlmeans"
