"""Typed records of the run store (benchmark.store.records): statuses are an enum, a missing status
is never "done", and a run folder in the layout earlier versions wrote still reads, ranks, resumes
and reports."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from benchmark.store.records import EnsembleConfig, MemberConfig, Metrics, RunRecord, Status
from benchmark.store.runstore import RunStore

# The files as main wrote them before the typed records (b8315cc): flat JSON, status strings.
OLD_RUN = {
    "name": "old",
    "profile": {"name": "smoke"},
    "seed": 0,
    "data": {"class_names": ["a", "b", "c"], "input_shape": [32, 32, 3]},
    "backend": "tensorflow",
    "versions": {"keras": "3"},
    "machine": {"cpu_count": 2},
    "budget_seconds": None,
    "started_at": "2026-12-01T00:00:00Z",
    "finished_at": "2026-12-01T00:01:00Z",
    "wall_seconds": 60.0,
    "deterministic": True,
    "strategy": None,
}


def old_config(mid: str, name: str) -> dict:
    return {
        "id": mid,
        "name": name,
        "architecture": "seed_cnn",
        "kind": "scratch",
        "family": "seed",
        "strategy": None,
        "input_size": 32,
        "hp": {"width": 0.5},
        "training": {"epochs": 1},
        "preprocess": [],
        "augment": [],
        "seed": 0,
        "bootstrap": None,
        "group": None,
        "class_names": ["a", "b", "c"],
    }


def write_old_entry(folder: Path, config: dict, metrics: dict, probs: np.ndarray | None) -> None:
    """An entry exactly as the old ``write_entry`` laid it out (hashes of its files included)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    if probs is not None:
        for split in ("val", "test"):
            np.save(folder / f"{split}_probs.npy", probs)
    files = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}
    (folder / "metrics.json").write_text(json.dumps({**metrics, "files": files}))


@pytest.fixture
def old_run(tmp_path) -> RunStore:
    root = tmp_path / "old"
    root.mkdir()
    (root / "run.json").write_text(json.dumps(OLD_RUN))
    (root / "data").mkdir()
    y = np.array([0, 1, 2, 0, 1, 2])
    np.save(root / "data" / "y_val.npy", y)
    np.save(root / "data" / "y_test.npy", y)
    probs = np.eye(3, dtype=np.float32)[y] * 0.8 + 0.2 / 3
    done = {
        "status": "done",
        "reason": "",
        "val_accuracy": 1.0,
        "val_loss": 0.3,
        "params": 100,
        "flops": None,
        "train_seconds": 1.5,
        "epochs": 1,
        "train_images_per_second": 10.0,
        "inference_images_per_second": 100.0,
        "finished_at": "2026-12-01T00:00:10Z",
        "dtype_policy": "float32",
    }
    members = root / "members"
    write_old_entry(members / "aaa", old_config("aaa", "good"), done, probs)
    failed = {"status": "failed", "reason": "RuntimeError: boom", "train_seconds": 0.1}
    write_old_entry(members / "bbb", old_config("bbb", "broken"), failed, None)
    no_status = {k: v for k, v in done.items() if k != "status"}  # edited or damaged
    write_old_entry(members / "ccc", old_config("ccc", "edited"), no_status, probs)
    stacking = {
        "name": "stacking-logistic",
        "method": "stacking",
        "members": ["aaa"],
        "member_names": ["good"],
        "weights": None,
        "params": {},
        "stacker": {"file": "stacker.npz", "stacker": "logistic"},
    }
    folder = root / "ensembles" / "stacking-logistic"
    write_old_entry(folder, stacking, {**done, "val_scoring": "out-of-fold", "n_members": 1}, probs)
    np.savez(folder / "stacker.npz", coef_=np.eye(3), intercept_=np.zeros(3))
    return RunStore(root)


def test_an_old_run_folder_reads_with_typed_records(old_run):
    good, broken, edited = (old_run.member(m) for m in ("aaa", "bbb", "ccc"))
    assert good.status is Status.DONE and good.ok and good.record.val_accuracy == 1.0
    assert good.metrics["dtype_policy"] == "float32"  # a key the record does not name is kept
    assert isinstance(good.settings, MemberConfig) and good.settings.outside_size == 32
    assert broken.status is Status.FAILED and broken.record.reason == "RuntimeError: boom"
    assert good.verify() == [] and broken.verify() == []
    run = old_run.run_record()
    assert run.seed == 0 and run.image_shape == (32, 32, 3) and old_run.class_names() == list("abc")
    assert old_run.read_run() == OLD_RUN  # nothing added, nothing lost
    ensemble = old_run.ensemble("stacking-logistic")
    assert isinstance(ensemble.settings, EnsembleConfig) and ensemble.settings.method == "stacking"
    np.testing.assert_array_equal(ensemble.stacker_arrays()["coef_"], np.eye(3))
    assert ensemble.config == json.loads((ensemble.path / "config.json").read_text())


def test_a_missing_status_is_unknown_never_done_and_is_redone(old_run):
    edited = old_run.member("ccc")
    assert edited.status is Status.UNKNOWN and not edited.ok
    assert "metrics.json records no known status" in edited.verify()
    ranked = sorted(old_run.members(), key=lambda e: e.rank_key)
    assert [e.id for e in ranked] == ["aaa", "bbb", "ccc"]  # below the failed one, not first

    from benchmark.run.members import MemberTrainer

    lines: list[str] = []
    trainer = MemberTrainer(old_run, None, seed=0, clock=None, progress=lines.append)
    trained = []

    def train():
        trained.append(1)
        raise RuntimeError("trained again")

    for mid in ("aaa", "ccc"):
        config = MemberConfig.from_json(old_config(mid, mid))
        trainer.keep_or_train(mid, config, {}, train)
    assert len(trained) == 1  # the old done member is kept; the one without a status is redone
    assert lines[0].startswith("    kept") and "damaged" in lines[1]
    assert old_run.member("ccc").status is Status.FAILED


def test_an_old_run_folder_still_reports(old_run):
    from reports.leaderboard import leaderboard

    board = leaderboard(old_run)
    assert list(board["model"])[:2] == ["good", "stacking-logistic"]  # a tie: the member first
    assert set(board["status"]) == {"done", "failed", "unknown"}


def test_statuses_read_from_files_are_an_enum():
    assert Status.read("done") is Status.DONE and Status.read(None) is Status.UNKNOWN
    assert Status.read("Done") is Status.UNKNOWN and str(Status.FAILED) == "failed"
    assert Status.DONE == "done" and f"{Status.SKIPPED}" == "skipped"


def test_the_store_writes_only_statuses_an_entry_can_end_with(tmp_path):
    store = RunStore(tmp_path)
    config = MemberConfig(id="m", name="m", architecture="seed_cnn")
    for status in (Status.UNFINISHED, Status.UNKNOWN):
        with pytest.raises(ValueError, match="status must be one of"):
            store.write_entry(store.member_dir("m"), config=config, metrics=Metrics(status))
    with pytest.raises(ValueError, match="status must be one of"):
        store.write_entry(store.member_dir("m"), config=config, metrics={"val_accuracy": 0.5})
    entry = store.write_entry(
        store.member_dir("m"), config=config, metrics=Metrics(Status.SKIPPED, "no weights")
    )
    on_disk = json.loads((entry.path / "metrics.json").read_text())
    assert on_disk["status"] == "skipped" and on_disk["finished_at"]  # stamped by the store
    assert "val_accuracy" not in on_disk  # unset figures are left out, as before
    assert store.member("m").record == entry.record


def test_records_round_trip_their_json():
    assert RunRecord.from_json(OLD_RUN).to_json() == OLD_RUN
    assert RunRecord.from_json({"seed": 1}).to_json() == {"seed": 1}  # no key added
    made = RunRecord(seed=2).to_json()  # one the runner makes: every key, as before
    assert made["seed"] == 2 and made["finished_at"] is None and set(made) == {*OLD_RUN, "identity"}
    config = old_config("x", "y")
    assert MemberConfig.from_json(config).to_json() == config
    with pytest.raises(TypeError, match="JSON object"):
        MemberConfig.from_json(["not", "an", "object"])
