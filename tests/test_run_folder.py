"""A run folder nobody can lose or corrupt (issue 12): each test is one of the issue's reproductions.

One tiny run (two one-epoch members, ensembles, no report) is trained once; each test works on its
own copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from benchmark.config.profiles import parse_profile
from benchmark.errors import ZoobenchError
from benchmark.run.runner import Runner
from benchmark.store import runfolder
from benchmark.store.runstore import RunStore

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "name": "folder-test",
    "seed": 0,
    "deterministic": True,
    "data": {"dataset": "cifar10", "train_size": 100, "val_size": 50, "test_size": 50},
    "training": {"epochs": 1, "batch_size": 50, "early_stopping_patience": 0},
    "members": [
        {"architecture": "seed_cnn", "name": "a", "hp": {"width": 0.5, "dense_units": 0}},
        {
            "architecture": "seed_cnn",
            "name": "b",
            "hp": {"width": 0.5, "dense_units": 0, "dropout": 0.0},
        },
    ],
    "ensembles": {"methods": ["average-all", "greedy"]},
    "report": {"enabled": False},
}


def tiny_profile(**changes):
    return parse_profile({**TINY, **changes}, "tiny folder test")


def run(out: Path, data: Path, profile=None, **kwargs) -> Runner:
    runner = Runner(
        profile or tiny_profile(), out, data_dir=str(data), progress=lambda s: None, **kwargs
    )
    runner.run()
    return runner


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_jpg) -> Path:
    out = tmp_path_factory.mktemp("folder") / "run"
    run(out, tiny_jpg)
    return out


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(finished, target)
    (target / runfolder.LOCK).unlink(missing_ok=True)
    return target


def test_fresh_refuses_a_folder_zoobench_did_not_write(tmp_path, tiny_jpg):
    """Reproduction 1: `--fresh --out victim` used to delete the user's thesis and photos."""
    victim = tmp_path / "victim"
    (victim / "photos").mkdir(parents=True)
    (victim / "thesis.txt").write_text("my thesis")
    (victim / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    for fresh in (True, False):
        with pytest.raises(ZoobenchError, match="holds files zoobench did not write"):
            run(victim, tiny_jpg, fresh=fresh)
    assert (victim / "thesis.txt").read_text() == "my thesis"
    assert sorted(p.name for p in victim.iterdir()) == ["photos", "thesis.txt"]


def test_fresh_deletes_only_what_zoobench_wrote(copy, tiny_jpg):
    (copy / "notes.md").write_text("mine")
    old_members = {p.name for p in (copy / "members").iterdir()}
    (copy / "members" / "stray").mkdir()  # inside zoobench's own folders: zoobench's to delete
    left = runfolder.remove_run_files(copy)
    assert left == ["notes.md"] and not (copy / "members").exists()
    run(copy, tiny_jpg, fresh=True)
    assert (copy / "notes.md").read_text() == "mine"
    assert {p.name for p in (copy / "members").iterdir()} == old_members


def test_out_pointing_at_a_file_is_one_line(tmp_path, tiny_jpg):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ZoobenchError, match="is a file, not a folder"):
        run(tmp_path / "file", tiny_jpg)


def test_a_damaged_member_is_retrained_not_kept(copy, tiny_jpg):
    """Reproduction 2: random bytes in a member's model.keras were 'kept' and broke the export."""
    store = RunStore(copy)
    victim = store.members()[0]
    victim.model_path.write_bytes(os.urandom(2048))
    assert victim.verify() == ["model.keras changed since it was written"]
    from ensembles.predictor import load_predictor

    with pytest.raises(ZoobenchError, match="damaged"):
        load_predictor(copy, victim.id)
    runner = run(copy, tiny_jpg)
    outcome = next(o for o in runner.outcomes if o.id == victim.id)
    assert not outcome.kept and outcome.status == "done"
    assert store.member(victim.id).verify() == []
    best = store.best_pointer()
    assert best["model"] == "model.keras"
    images = store.load_array("x_test")[:4]
    assert load_predictor(copy).predict_proba(images).shape == (4, 10)


def test_another_profile_with_the_same_name_is_refused(copy, tiny_jpg):
    """Reproduction 3: a profile of the same name but other split sizes ran into the folder."""
    other = tiny_profile(data={**TINY["data"], "val_size": 40})
    with pytest.raises(
        ZoobenchError,
        match=r"holds another run \(it differs in the profile.s settings, the split\)",
    ):
        run(copy, tiny_jpg, profile=other)
    more = tiny_profile(members=[*TINY["members"], {"architecture": "seed_cnn", "name": "c"}])
    with pytest.raises(ZoobenchError, match=r"it differs in the profile's settings\)"):
        run(copy, tiny_jpg, profile=more)
    # The seed; and the split, whose fixed test subset a seed other than 0 records (datasets).
    with pytest.raises(ZoobenchError, match=r"it differs in the seed, the split\)"):
        run(copy, tiny_jpg, seed=3)


def hold_lock(folder, argv=()) -> subprocess.Popen:
    """Another process (command line ``argv``) that takes ``folder``'s run lock, says "locked" and
    holds it for a minute: kill it when done."""
    code = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from benchmark.store import runfolder
        with runfolder.locked(Path({str(folder)!r})):
            print("locked", flush=True)
            time.sleep(60)
    """)
    return subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_a_second_run_is_refused_while_the_first_holds_the_lock(copy, tiny_jpg):
    """Reproduction 4: two runs into one folder both trained and tore each other's files."""
    holder = hold_lock(copy)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            ZoobenchError, match=rf"in use by another zoobench run \(PID {holder.pid} on "
        ):
            run(copy, tiny_jpg)
    finally:
        holder.kill()
        holder.wait()
    # The holder died without unlocking: its lock is stale and the next run takes it over.
    assert "pid" in (copy / runfolder.LOCK).read_text()
    run(copy, tiny_jpg)
    assert (copy / runfolder.LOCK).read_text() == ""


def test_a_torn_run_json_is_named_and_repaired_by_the_next_run(copy, tiny_jpg, capsys):
    """Reproduction 5: a truncated run.json made run and predict fail with 'internal error'."""
    from benchmark.cli.app import main

    text = (copy / "run.json").read_text()
    (copy / "run.json").write_text(text[:100])
    image = REPO / "tests" / "data" / "cifar10-tiny" / "test" / "cat" / "0000.jpg"
    assert main(["predict", str(image), "--run", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "run.json is not valid JSON" in err and "Traceback" not in err
    runner = run(copy, tiny_jpg)
    assert all(o.kept for o in runner.outcomes)  # nothing retrained
    assert RunStore(copy).read_run()["identity"]["hash"]


def test_a_failed_ensemble_rebuild_keeps_the_old_ensembles(copy, monkeypatch):
    import ensembles.build as build

    store = RunStore(copy)
    before = {e.id: e.metrics["val_accuracy"] for e in store.ensembles()}
    fused = (store.best_dir / "model.keras").read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(build, "write_best", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        build.build_ensembles(store, {"methods": ["greedy"]}, seed=0)
    assert {e.id: e.metrics["val_accuracy"] for e in store.ensembles()} == before
    assert (store.best_dir / "model.keras").read_bytes() == fused
    assert not (copy / "ensembles.new").exists()


def test_a_swap_killed_between_its_renames_is_undone(copy):
    store = RunStore(copy)
    os.replace(copy / "ensembles", copy / "ensembles.old")
    (copy / "ensembles.new").mkdir()
    store.recover_ensembles()
    assert (copy / "ensembles" / "best").is_dir()
    assert not (copy / "ensembles.old").exists() and not (copy / "ensembles.new").exists()


def test_stored_data_arrays_are_checked_not_trusted(copy, tiny_jpg):
    store = RunStore(copy)
    y_val = store.load_array("y_val")
    store.save_array("y_val", (y_val + 1) % 10)
    run(copy, tiny_jpg)
    assert np.array_equal(store.load_array("y_val"), y_val)


def test_the_lock_file_left_by_a_killed_chief_holds_no_token(tmp_path):
    """Issue 23's hole: the chief's --token was written into .zoobench.lock (0644, on a shared
    disk) and stayed there after a SIGKILL. Every spelling argparse accepts is redacted."""
    argv = ["run", "--chief", "0.0.0.0:7001", "--token", "s3cret-a", "--token=s3cret-b"]
    argv += ["--tok", "s3cret-c", "--tensorboard", "--out", "runs/x"]
    holder = hold_lock(tmp_path, argv)
    try:
        assert holder.stdout.readline().strip() == "locked"
    finally:
        holder.kill()  # SIGKILL: nothing gets to empty the lock file
        holder.wait()
    text = (tmp_path / runfolder.LOCK).read_text()
    assert str(holder.pid) in text and "s3cret" not in text
    assert runfolder.redacted_command(["zoobench", *argv]) == (
        "zoobench run --chief 0.0.0.0:7001 --token <redacted> --token=<redacted> "
        "--tok <redacted> --tensorboard --out runs/x"
    )
    assert "--token <redacted> --token=<redacted> --tok <redacted> --tensorboard" in text
