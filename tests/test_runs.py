"""``zoobench runs``: every run folder in a folder at a glance, read from what each run stored."""

from __future__ import annotations

import json

from benchmark.cli.app import main
from benchmark.store import runfolder
from reports.leaderboard import leaderboard
from tests.fake_run import make_fake_run


def test_runs_lists_each_run_with_its_best_row_and_status(tmp_path, capsys):
    done = make_fake_run(tmp_path / "runs" / "a", accuracies=(0.8, 0.6))
    meta = done.read_run()
    done.write_run(
        {
            **meta,
            "finished_at": "2026-11-28T10:00:00Z",
            "wall_seconds": 312.5,
            "backend": "tensorflow",
        }
    )
    board = leaderboard(done, save=True)
    best = board[board.status == "done"].iloc[0]
    make_fake_run(tmp_path / "runs" / "b", accuracies=(0.7,))  # no leaderboard yet, no finish
    (tmp_path / "runs" / "holiday-photos").mkdir()  # not a run: not listed
    (tmp_path / "runs" / "c").mkdir()
    (tmp_path / "runs" / "c" / "run.json").write_text("{")  # torn

    with runfolder.locked(tmp_path / "runs" / "b"):
        assert main(["runs", str(tmp_path / "runs"), "--json"]) == 0
    rows = {r["run"].rsplit("/", 1)[1]: r for r in json.loads(capsys.readouterr().out)}
    assert sorted(rows) == ["a", "b", "c"]
    assert rows["a"]["status"] == "finished" and rows["a"]["best"] == best.model
    assert rows["a"]["test_accuracy"] == best.test_accuracy and rows["a"]["wall"] == 312.5
    assert rows["b"]["status"].startswith("running (PID ") and rows["b"]["best"] is None
    assert rows["c"]["status"] == "run.json damaged"

    assert main(["runs", str(tmp_path / "runs")]) == 0
    table = capsys.readouterr().out
    assert f"| {best.model} " in table and f"{100 * best.test_accuracy:.2f}%" in table
    assert "5m12s" in table and "| unfinished " in table
