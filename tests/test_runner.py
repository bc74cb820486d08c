"""The runner end to end on the smoke profile (shrunk): store layout, failures, resume, budget, API."""

from __future__ import annotations

import copy
import json
import time

import numpy as np
import pytest
from conftest import TINY_JPG, shrunk_smoke_toml
from store_writes import foreign_writes, recording

pytest.importorskip("keras")

from benchmark.api import Benchmark  # noqa: E402
from benchmark.config.profiles import load_profile, parse_profile  # noqa: E402
from benchmark.run.runner import Runner  # noqa: E402
from benchmark.store.runstore import RunStore  # noqa: E402

TINY_DATA = {"dataset": "cifar10", "train_size": 100, "val_size": 50, "test_size": 50}
SMOKE_WRITES: list = []  # (path, writing module) of every atomic write of the smoke run


def tiny_smoke(nan_member: bool = True):
    """The shipped smoke profile on fewer images, plus a member whose loss explodes."""
    profile = load_profile("smoke")
    raw = copy.deepcopy(profile.raw)
    raw["data"] = dict(TINY_DATA)
    raw["training"]["batch_size"] = 50
    raw["report"] = {"enabled": True}
    if nan_member:
        raw["members"].append(
            {
                "architecture": "seed_cnn",
                "name": "exploding",
                "hp": {"width": 0.5},
                "training": {"learning_rate": 1e12, "epochs": 3},
            }
        )
    return parse_profile(raw, "smoke (shrunk for tests)")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, tiny_jpg):
    out = tmp_path_factory.mktemp("runs") / "smoke"
    lines: list[str] = []
    runner = Runner(tiny_smoke(), out, data_dir=str(tiny_jpg), progress=lines.append)
    with recording(SMOKE_WRITES):
        runner.run()
    return runner, lines


def test_only_the_store_writes_inside_the_run_folder(smoke_run):
    """Members, ensembles, the best pointer, robustness, the leaderboard: every file in the run
    folder (its lent tuner/, report/ folders aside) is written by benchmark.store, atomically."""
    root = smoke_run[0].store.root
    assert any(p.name == "model.keras" for p, _ in SMOKE_WRITES)  # the recorder saw the run
    assert foreign_writes(SMOKE_WRITES, root) == []


def test_the_write_check_catches_a_module_that_writes_a_run_file_itself(tmp_path):
    from benchmark import atomic

    (tmp_path / "members" / "m1").mkdir(parents=True)
    writes: list = []
    with recording(writes):
        atomic.write_json(tmp_path / "members" / "m1" / "metrics.json", {"status": "done"})
        RunStore(tmp_path).write_leaderboard(__import__("pandas").DataFrame({"a": [1]}))
    (tmp_path / "members" / "m1" / "history.csv").write_text("epoch\n1\n")  # not atomic
    assert foreign_writes(writes, tmp_path) == [
        "members/m1/history.csv was written without benchmark.atomic",
        f"{__name__} wrote members/m1/metrics.json",
    ]


def test_smoke_run_fills_the_store(smoke_run):
    runner, lines = smoke_run
    store = runner.store
    meta = store.read_run()
    assert meta["profile"]["name"] == "smoke" and meta["seed"] == 0
    assert meta["data"]["source"] and meta["data"]["fingerprint"]
    assert meta["data"]["sizes"] == {"train": 100, "val": 50, "test": 50}
    assert meta["machine"]["cpu_count"] and "tensorflow" in " ".join(meta["versions"])
    assert meta["finished_at"] and meta["wall_seconds"] > 0
    assert store.load_array("sample_x").shape == (25, 32, 32, 3)
    assert store.load_array("x_test").dtype == np.uint8 and len(store.labels("test")) == 50
    members = {m.name: m for m in store.members()}
    assert set(members) == {
        "seed_cnn tiny",
        "seed_cnn tiny swish [boost 0]",
        "seed_cnn tiny swish [boost 1]",
        "seed_cnn tiny (tuned)",
        "exploding",
    }
    swish = ("seed_cnn tiny swish [boost 0]", "seed_cnn tiny swish [boost 1]")
    for name in ("seed_cnn tiny", *swish, "seed_cnn tiny (tuned)"):
        m = members[name]
        assert m.ok, m.metrics
        for f in ("config.json", "model.keras", "history.csv", "val_probs.npy", "test_probs.npy"):
            assert (m.path / f).is_file(), f
        assert m.probs("val").shape == (50, 10) and m.probs("test").shape == (50, 10)
        expected = float(np.mean(m.probs("val").argmax(1) == store.labels("val")))
        assert m.metrics["val_accuracy"] == pytest.approx(expected)
        for key in (
            "params",
            "train_seconds",
            "epochs",
            "inference_images_per_second",
            "finished_at",
        ):
            assert m.metrics[key], key
        assert m.config["kind"] == "scratch" and m.config["id"] == m.id
    tuned = members["seed_cnn tiny (tuned)"].config
    assert tuned["tuner"]["algorithm"] == "random" and tuned["hp"]["width"] == 0.5
    assert tuned["training"]["learning_rate"] in (0.001, 0.003)
    projects = list(store.tuner_dir.iterdir())
    assert len(projects) == 1 and len(list(projects[0].glob("trial_*/trial.json"))) == 2
    # The shipped smoke profile boosts one member: two SAMME rounds and their ensemble row.
    rounds = [members[n] for n in swish]
    assert [r.config["boosting"]["round"] for r in rounds] == [0, 1]
    assert {r.config["group"] for r in rounds} == {"boosting:seed_cnn tiny swish"}
    boosted = next(e for e in store.ensembles() if e.config["method"] == "boosting")
    assert boosted.config["members"] == [r.id for r in rounds]
    assert len(list(projects[0].glob("trial_*/model.keras"))) == 1  # the unused trial was pruned
    assert store.leaderboard_csv.is_file()
    assert any("leaderboard" in line for line in lines) and any("[1/5]" in line for line in lines)


def test_a_nan_member_is_recorded_as_failed_and_the_run_goes_on(smoke_run):
    runner, lines = smoke_run
    bad = next(m for m in runner.store.members() if m.name == "exploding")
    assert bad.status == "failed" and "NaN" in bad.metrics["reason"]
    assert not (bad.path / "model.keras").exists()
    assert any("FAILED" in line and "exploding" in line for line in lines)
    assert runner.store.ensembles()
    for ens in runner.store.ensembles():
        assert bad.id not in ens.config["members"]


def test_the_smoke_run_measures_corruption_adabn_and_fgsm_accuracy(smoke_run):
    """[robustness] in smoke: the three leaderboard columns for members and ensembles, the report's
    figure and settings, and a rerun that measures only what is missing."""
    from benchmark.config.schema import CIFAR10_C
    from benchmark.run.robustness import measure_run
    from benchmark.store.runstore import ROBUSTNESS_PROBS

    runner, lines = smoke_run
    store = runner.store
    board = store.saved_leaderboard()
    done = board[board["status"] == "done"]
    assert set(done["kind"]) == {"scratch", "ensemble"}
    for col in ("corruption_accuracy", "corruption_accuracy_adabn", "fgsm_accuracy"):
        assert done[col].between(0, 1).all(), col
    assert board[board["status"] == "failed"]["fgsm_accuracy"].isna().all()
    members = {m.name: m.robustness()["summary"] for m in store.members() if m.ok}
    swish = members["seed_cnn tiny swish [boost 0]"]
    assert swish["note"].startswith("no BN")  # batch_norm = false
    assert swish["corruption_accuracy_adabn"] == swish["corruption_accuracy"]
    assert members["seed_cnn tiny"]["bn_layers"] > 0
    assert len(store.members()[0].robustness()["table"]) == 15  # CIFAR-10-C x 1 severity
    # An averaging ensemble's numbers are its weights applied to its members' stored predictions.
    ens = next(e for e in store.ensembles() if e.config["method"] != "stacking")
    record = ens.robustness()
    labels = store.labels("test")[record["indices"]]
    member_probs = [store.member(mid).robustness_probs() for mid in ens.config["members"]]
    for row in record["table"]:
        key = f"adabn-{row['corruption']}-{row['severity']}"
        mixed = sum(
            w * p[key].astype(float)
            for w, p in zip(ens.config["weights"], member_probs, strict=True)
        )
        assert row["accuracy_adabn"] == pytest.approx(float(np.mean(mixed.argmax(1) == labels)))
    assert any(line.startswith("robustness: ") and "measured in" in line for line in lines)
    # every figure carries its 95% interval; at 50 images they are marked indicative (~)
    for col in ("corruption_accuracy", "corruption_accuracy_adabn", "fgsm_accuracy"):
        assert (done[f"{col}_low"] <= done[col]).all() and (done[col] <= done[f"{col}_high"]).all()
        assert ((done[f"{col}_high"] - done[f"{col}_low"]) / 2 > 0.05).all(), col
    assert members["seed_cnn tiny"]["adapt_note"].startswith("adapted on 50 images, fewer than")
    robust_lines = [line for line in lines if line.startswith("robustness: seed_cnn tiny:")]
    assert robust_lines and "corrupted ~" in robust_lines[0] and "[" in robust_lines[0]
    readme = (store.report_dir / "README.md").read_text()
    assert "Generated corruptions" in readme and "FGSM acc." in readme
    assert "~ indicative" in readme and "## Robustness by corruption and severity" in readme
    table = readme.split("### Accuracy by corruption and severity, no adaptation")[1]
    assert all(f"| {name}" in table for name in CIFAR10_C) and "| mean" in table
    assert (store.report_dir / "figures" / "robustness.png").is_file()
    config = runner.profile.robustness_config
    assert measure_run(store, config, runner.seed) == 0  # every record is current: nothing redone
    victim = next(m for m in store.members() if m.name == "seed_cnn tiny")
    (victim.path / ROBUSTNESS_PROBS).write_bytes(b"torn")
    assert measure_run(store, config, runner.seed) == 1  # lost probabilities: that member again


def test_rerun_keeps_finished_members_and_redoes_the_interrupted_one(smoke_run, tiny_jpg):
    runner, _ = smoke_run
    store = runner.store
    before = {
        m.id: (m.metrics["val_accuracy"], (m.path / "metrics.json").stat().st_mtime_ns)
        for m in store.members()
        if m.ok
    }
    victim = next(m for m in store.members() if m.name == "seed_cnn tiny")
    (victim.path / "metrics.json").unlink()  # as if killed while writing it
    lines: list[str] = []
    profile = tiny_smoke()
    profile.report = {"enabled": False}  # the report was checked above; this is about the members
    again = Runner(profile, store.root, data_dir=str(tiny_jpg), progress=lines.append)
    again.run()
    kept = [o for o in again.outcomes if o.kept]
    redone = [o for o in again.outcomes if not o.kept]
    assert [o.name for o in redone] == ["seed_cnn tiny"] and redone[0].id == victim.id
    assert len(kept) == 4  # the two boosting rounds, the tuned member, the failed one
    after = {m.id: m for m in store.members() if m.ok}
    assert set(after) == set(before)
    for mid, (acc, mtime) in before.items():
        if mid != victim.id:
            assert after[mid].metrics["val_accuracy"] == acc
            assert (after[mid].path / "metrics.json").stat().st_mtime_ns == mtime


def test_the_api_reads_a_finished_run(smoke_run):
    bench = Benchmark.load(smoke_run[0].store.root)
    board = bench.leaderboard()
    assert len(board) >= 4
    done = board[board["status"] == "done"]
    assert list(done["val_accuracy"]) == sorted(done["val_accuracy"], reverse=True)
    images = bench.store.load_array("x_test")[:4]
    probs = bench.best().predict_proba(images)
    assert probs.shape == (4, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert {"model", "kind", "val_accuracy", "test_accuracy", "params"} <= set(board.columns)
    assert set(board["kind"]) <= {"scratch", "pretrained", "ensemble"}


def test_the_api_predicts_evaluates_and_reads_the_searches(smoke_run):
    from sklearn.metrics import f1_score

    from benchmark.errors import ZoobenchError

    bench = Benchmark.load(smoke_run[0].store.root)
    store = bench.store
    x, y = store.load_array("x_test"), store.labels("test")
    board = bench.leaderboard()
    best = (
        store.find(board.iloc[0]["id"])
        if board.iloc[0]["kind"] != "ensemble"
        else next(e for e in store.ensembles() if e.name == board.iloc[0]["model"])
    )
    probs = bench.predict_proba(x)
    assert np.allclose(probs, best.probs("test"), atol=1e-4)  # the fused best is the stored best
    assert np.array_equal(bench.predict(x), probs.argmax(axis=1))
    scores = bench.evaluate(x, y)
    assert scores["images"] == len(y) == scores["confusion_matrix"].sum()
    assert scores["accuracy"] == pytest.approx(board.iloc[0]["test_accuracy"])
    assert np.trace(scores["confusion_matrix"]) / len(y) == pytest.approx(scores["accuracy"])
    assert scores["f1_macro"] == pytest.approx(
        f1_score(y, probs.argmax(1), average="macro", labels=np.arange(10), zero_division=0)
    )
    one_hot = np.eye(10)[y]
    assert bench.evaluate(x, one_hot)["accuracy"] == scores["accuracy"]
    member = next(m for m in store.members() if m.name == "seed_cnn tiny")
    assert bench.evaluate(x, y, model=member.id)["accuracy"] == pytest.approx(
        float((member.probs("test").argmax(1) == y).mean())
    )
    with pytest.raises(ZoobenchError, match="50 images but 3 labels"):
        bench.evaluate(x, y[:3])
    with pytest.raises(ZoobenchError, match="class indices"):
        bench.evaluate(x[:2], [0, 10])
    # Keras Tuner's trials, read back from the run's tuner/ folder.
    trials = bench.tuner_results()
    searched = trials[trials["search"] == "seed_cnn tiny (tuned)"]
    assert len(searched) == 2 and set(searched["status"]) == {"COMPLETED"}
    assert list(searched["score"]) == sorted(searched["score"], reverse=True)
    tuned = next(m for m in store.members() if m.name.startswith("seed_cnn tiny (tuned)"))
    best_hp = bench.best_hyperparameters()["seed_cnn tiny (tuned)"]
    assert best_hp["training"]["learning_rate"] == tuned.config["training"]["learning_rate"]
    assert best_hp["training"]["learning_rate"] in (0.001, 0.003)
    assert best_hp["hp"] == tuned.config["hp"]


def test_refit_full_trains_on_train_plus_validation_and_leaves_selection_alone(
    smoke_run, capsys, tmp_path
):
    from benchmark.cli.app import main
    from benchmark.errors import ZoobenchError
    from benchmark.metrics import accuracy

    store = smoke_run[0].store
    bench = Benchmark.load(store.root)
    board_before = store.leaderboard_csv.read_bytes()
    best_before = store.best_pointer()
    member = next(m for m in store.members() if m.name == "seed_cnn tiny")
    record = bench.refit_full(member.id)
    assert record["train_images"] == 150  # 100 train + 50 validation
    assert record["members"] == [
        {
            "id": member.id,
            "name": "seed_cnn tiny",
            "refit": True,
            "epochs": 1,
            "train_seconds": record["members"][0]["train_seconds"],
        }
    ]
    assert record["original_test_accuracy"] == pytest.approx(
        accuracy(member.probs("test"), store.labels("test"))
    )
    refit_probs = store.refit_test_probs(member.id)
    assert record["test_accuracy"] == accuracy(refit_probs, store.labels("test"))
    assert not np.allclose(refit_probs, member.probs("test"), atol=1e-3)  # really retrained
    x = store.load_array("x_test")
    assert np.allclose(bench.predict_proba(x, model=f"refit:{member.id}"), refit_probs, atol=1e-4)
    # Selection is untouched: same leaderboard file, same exported best, no new row.
    assert store.leaderboard_csv.read_bytes() == board_before
    assert store.best_pointer() == best_before
    assert member.id not in {e.name for e in store.ensembles()} and len(bench.leaderboard()) == len(
        Benchmark.load(store.root).leaderboard()
    )
    with pytest.raises(ZoobenchError, match="no refit 'nope'"):
        bench.predict(x, model="refit:nope")
    boosted = next(m for m in store.members() if m.config.get("boosting"))
    with pytest.raises(ZoobenchError, match="nothing to retrain .*a boosting round"):
        bench.refit_full(boosted.id)
    import cv2

    picture = tmp_path / "first.png"
    cv2.imwrite(str(picture), cv2.cvtColor(x[0], cv2.COLOR_RGB2BGR))
    assert (
        main(["predict", str(picture), "--run", str(store.root), "--model", f"refit:{member.id}"])
        == 0
    )
    assert "(refit on train + validation)" in capsys.readouterr().out
    assert main(["refit", str(store.root), "--model", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_another_profile_in_the_same_folder_is_refused(smoke_run, tiny_jpg):
    from benchmark.errors import ZoobenchError

    with pytest.raises(ZoobenchError, match="--fresh"):
        Runner(tiny_smoke(), smoke_run[0].store.root, data_dir=str(tiny_jpg), seed=5).run()


def test_the_budget_is_honoured(tmp_path, tiny_jpg):
    # 25 s: room for the planner's probes and one short member even on a loaded CI machine (12 s
    # left none there once: every member was dropped), still far below the 400 epochs asked for.
    budget = 25
    raw = {
        "name": "budget",
        "data": dict(TINY_DATA),
        "training": {"epochs": 400, "batch_size": 50},
        "members": [
            {"architecture": "seed_cnn", "name": "long", "hp": {"width": 0.5, "dense_units": 0}},
            {
                "architecture": "seed_cnn",
                "name": "longer",
                "hp": {"width": 1.0},
                "training": {"epochs": 4000},
            },
        ],
        "ensembles": {"enabled": False},
        "report": {"enabled": False},
    }
    lines: list[str] = []
    runner = Runner(
        parse_profile(raw, "test"),
        tmp_path / "run",
        data_dir=str(tiny_jpg),
        budget_seconds=budget,
        progress=lines.append,
    )
    start = time.monotonic()
    runner.run()
    elapsed = time.monotonic() - start
    decisions = {t.label: t.decision for t in runner.tasks}
    assert decisions["longer"].action == "dropped" or decisions["longer"].action == "shortened"
    assert any("dropped" in line or "shortened" in line for line in lines)
    done = [m for m in runner.store.members() if m.ok]
    epoch = max((m.metrics["train_seconds"] / m.metrics["epochs"] for m in done), default=0.0)
    assert elapsed <= budget + epoch + 8, (elapsed, lines)  # + one epoch, + saving and predicting
    assert runner.store.read_run()["finished_at"]
    for m in done:
        assert m.metrics["epochs"] < 400
    # Ensembles are off here: the best member is still exported as the run's best.
    assert done and runner.store.best_pointer()["kind"] == "member"


def test_plan_prints_without_training(tmp_path, tiny_jpg, capsys):
    from benchmark.cli.app import main

    profile = tmp_path / "p.toml"
    profile.write_text(
        'name = "p"\n[data]\ntrain_size = 100\nval_size = 50\ntest_size = 50\n'
        '[[members]]\narchitecture = "seed_cnn"\nhp = {width = 0.5}\nseeds = 2\n'
    )
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                str(profile),
                "--plan",
                "--budget",
                "10m",
                "--out",
                str(out),
                "--data-dir",
                str(tiny_jpg),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "seed_cnn [seed 0]" in text and "seed_cnn [seed 1]" in text and "estimated total" in text
    assert not out.exists()


# -m slow only: tests/test_fault_injection.py kills `zoobench run` at random moments by default
# (twice) and checks the whole leaderboard; this one also covers a search's member (the tuned one).
@pytest.mark.slow
def test_resume_after_sigkill_gives_the_same_leaderboard(tmp_path):
    """Kill a run at a random moment, rerun it: same members, same val and test accuracies."""
    import os
    import random
    import signal
    import subprocess
    import sys

    # Ensembles and the report off: the leaderboards compared below are the members'.
    profile = shrunk_smoke_toml(tmp_path / "smoke.toml", report=False, ensembles=False)
    env = dict(os.environ, ZOOBENCH_CACHE=str(tmp_path / "cache"))

    def cmd(out):
        return [
            sys.executable,
            "-m",
            "benchmark.cli",
            "run",
            str(profile),
            "--out",
            str(out),
            "--data-dir",
            str(TINY_JPG),
        ]

    start = time.monotonic()
    subprocess.run(cmd(tmp_path / "a"), check=True, env=env, capture_output=True)
    full = time.monotonic() - start
    proc = subprocess.Popen(
        cmd(tmp_path / "b"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(random.Random().uniform(0.3, 0.9) * full)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(cmd(tmp_path / "b"), check=True, env=env, capture_output=True)

    def board(out):
        b = Benchmark.load(out).leaderboard()
        b = b[b["kind"] != "ensemble"]
        return sorted(
            zip(
                b["id"],
                b["val_accuracy"].round(6),
                b["test_accuracy"].astype(float).round(6),
                strict=True,
            )
        )

    assert board(tmp_path / "a") == board(tmp_path / "b")
    assert json.loads((tmp_path / "b" / "run.json").read_text())["finished_at"]
    # Ensembles off: the leaderboard's first row (a member) is still exported as the run's best.
    first = Benchmark.load(tmp_path / "b").leaderboard().iloc[0]
    best = RunStore(tmp_path / "b").best_pointer()
    assert best["kind"] == "member" and first["id"] == f"members/{best['id']}"
    assert best["model"] == "model.keras"


def test_stored_probabilities_are_reproduced_from_raw_pixels(tmp_path, tiny_jpg):
    """The stored val/test probabilities come from cached features; the saved raw-pixel model
    (with the member's preprocessing replayed) must give the same answers."""
    import keras

    import zoo
    from benchmark.data.preprocess import apply_steps

    raw = {
        "name": "transfer",
        "data": dict(TINY_DATA),
        "training": {"epochs": 2, "batch_size": 50, "optimizer": "adam", "learning_rate": 0.001},
        "members": [
            {
                "architecture": "efficientnet_lite0",
                "strategy": "feature-extraction",
                "input_size": 64,
                "preprocess": [{"name": "equalize"}],
                "transfer": {"head_trials": 1},
            },
            {
                "architecture": "seed_cnn",
                "input_size": 40,
                "preprocess": [{"name": "clahe"}],
                "hp": {"width": 0.5, "dense_units": 0},
                "training": {"epochs": 1},
            },
        ],
        "ensembles": {"enabled": False},
        "report": {"enabled": False},
    }
    runner = Runner(parse_profile(raw, "transfer test"), tmp_path / "t", data_dir=str(tiny_jpg))
    runner.run()
    member, scratch = sorted(runner.store.members(), key=lambda m: m.config["kind"])
    assert member.ok and scratch.ok, (member.metrics, scratch.metrics)
    assert member.config["strategy"] == "feature-extraction" and member.config["preprocess"]
    assert "efficientnet_lite0 / feature-extraction @64px" in member.name
    assert zoo.get("efficientnet_lite0").kind == "pretrained"
    model = keras.saving.load_model(member.model_path, safe_mode=True)
    x_test = apply_steps(runner.store.load_array("x_test"), member.config["preprocess"])
    probs = model.predict(x_test.astype(np.float32), verbose=0)
    np.testing.assert_allclose(probs, member.probs("test"), atol=1e-4)
    assert member.metrics["inference_images_per_second"] > 0

    # The predictor replays each member's recipe on raw 32x32 pictures: preprocessing at the run's
    # image size, then the member's own input size (40 px for the scratch net), as in training.
    from ensembles.predictor import load_predictor

    raw_test = runner.store.load_array("x_test")
    for entry in (member, scratch):
        predicted = load_predictor(runner.store.root, entry.id).predict_proba(raw_test)
        np.testing.assert_allclose(predicted, entry.probs("test"), atol=1e-4)
