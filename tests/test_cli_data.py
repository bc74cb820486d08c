"""`zoobench data info` / `data grid` through the real entry point."""

from __future__ import annotations

import json

import cv2
from conftest import write_class_folders

from benchmark.cli.app import main


def test_data_info_json_and_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ZOOBENCH_CACHE", str(tmp_path / "cache"))
    root = write_class_folders(tmp_path / "tree", per_class=(10, 4))
    assert main(["data", "info", "--data-dir", str(root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sizes"] == {"train": 90, "val": 10, "test": 40}
    assert info["source"] == "CIFAR-10 (class folders)"
    assert main(["data", "info", "--data-dir", str(root), "--val-fraction", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "train 80 / val 20 / test 40" in out and "| airplane" in out


def test_data_grid_writes_a_png(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ZOOBENCH_CACHE", str(tmp_path / "cache"))
    root = write_class_folders(tmp_path / "tree", per_class=(10, 4))
    out = tmp_path / "grid.png"
    assert main(["data", "grid", "--data-dir", str(root), "--out", str(out)]) == 0
    image = cv2.imread(str(out))
    assert image is not None and image.shape[0] > 300 and image.shape[1] > 300
    assert "wrote" in capsys.readouterr().out


def test_data_errors_are_one_line_exit_2(tmp_path, capsys):
    assert main(["data", "info", "--data-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoobench: error: data folder") and "\n" not in err
    assert main(["data", "info", "--dataset", "mnist", "--data-dir", str(tmp_path)]) == 2
    assert "unknown dataset 'mnist'" in capsys.readouterr().err
