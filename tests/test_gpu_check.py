"""scripts/gpu_check.py on a CPU: the data pack round-trips byte for byte, the dry run plans the
profile from the pack, and the summary reads a finished run's figures."""

from __future__ import annotations

import importlib.util
import json
import re
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_class_folders

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pack_holds_every_image_byte_for_byte_and_is_reproducible(gpu_check, tmp_path):
    data = write_class_folders(tmp_path / "data", per_class=(3, 2))
    (data / "train" / "notes.txt").write_text("not an image")
    first = gpu_check.pack(data, tmp_path / "a.tar.gz", gzip=True)
    second = gpu_check.pack(data, tmp_path / "b.tar.gz", gzip=True)
    with tarfile.open(first) as tar:
        names = sorted(tar.getnames())
    assert len(names) == 50 and "train/notes.txt" not in names
    out = gpu_check.unpack(first, tmp_path / "out")
    for name in names:
        assert (out / name).read_bytes() == (data / name).read_bytes()
    with tarfile.open(first) as a, tarfile.open(second) as b:  # same members, same metadata
        assert [(m.name, m.size, m.mtime) for m in a] == [(m.name, m.size, m.mtime) for m in b]


def test_the_dry_run_plans_the_profile_from_a_pack(gpu_check, tmp_path, capsys):
    data = write_class_folders(tmp_path / "data", per_class=(45, 20))
    archive = gpu_check.pack(data, tmp_path / "data.tar.gz", gzip=True)
    status = gpu_check.main(
        [
            "run",
            "--data",
            str(archive),
            "--profile",
            "smoke",
            "--backend",
            "tensorflow",
            "--out",
            str(tmp_path / "run"),
            "--dry-run",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert re.search(r"CIFAR-10 \(class folders\), train 300 / val \d+ / test 200", out), out
    assert "nothing was trained" in out
    assert not (tmp_path / "run" / "leaderboard.csv").exists()


def test_the_summary_reads_wall_time_rates_and_accuracy(gpu_check, tmp_path):
    run = tmp_path / "run"
    member = run / "members" / "abc"
    member.mkdir(parents=True)
    pd.DataFrame({"epoch": [1, 2, 3, 4], "epoch_seconds": [30.0, 2.0, 3.0, 2.5]}).to_csv(
        member / "history.csv", index=False
    )
    (run / "run.json").write_text(
        json.dumps(
            {
                "backend": "jax",
                "machine": {"gpus": ["gpu:0 NVIDIA H200"]},
                "data": {
                    "source": "CIFAR-10 (JPEG copy)",
                    "sizes": {"train": 45000, "val": 5000, "test": 10000},
                },
            }
        )
    )
    pd.DataFrame(
        [
            {
                "model": "greedy",
                "kind": "ensemble",
                "status": "done",
                "test_accuracy": 0.86,
                "val_accuracy": 0.87,
                "train_seconds": 100.0,
                "id": "ensembles/greedy",
            },
            {
                "model": "fastnet",
                "kind": "scratch",
                "status": "done",
                "test_accuracy": 0.84,
                "val_accuracy": 0.85,
                "train_seconds": 57.0,
                "id": "members/abc",
            },
        ]
    ).to_csv(run / "leaderboard.csv", index=False)
    summary = gpu_check.summarize(run, wall_seconds=340.04)
    assert summary["backend"] == "jax" and summary["wall_seconds"] == 340.0
    assert summary["best"] == {"model": "greedy", "test_accuracy": 0.86, "val_accuracy": 0.87}
    (fastnet,) = summary["members"]
    # The first (compiling) epoch is left out: the median of 2.0, 3.0 and 2.5 s is 2.5 s.
    assert fastnet["steady_images_per_second"] == pytest.approx(45000 / 2.5)
    # A member that recorded its own steady rate (training steps only) is read as recorded.
    (run / "members" / "abc" / "metrics.json").write_text(
        json.dumps({"steady_train_images_per_second": 21000.0})
    )
    (fastnet,) = gpu_check.summarize(run, wall_seconds=340.0)["members"]
    assert fastnet["steady_images_per_second"] == 21000.0
