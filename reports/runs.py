"""``zoobench runs [DIR]``: the runs in a folder at a glance, from what each run folder holds.

Nothing is recomputed: each row comes from the run's ``run.json`` and its saved leaderboard, so
listing a folder of runs takes a moment even while one of them is training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmark import formatting
from benchmark.errors import ZoobenchError
from benchmark.store import runfolder
from benchmark.store.runstore import RunStore

COLUMNS = ("run", "profile", "data", "backend", "status", "best", "test_accuracy", "wall")


def run_rows(folder: Path) -> list[dict[str, Any]]:
    """One row per run folder directly under ``folder`` (others are not runs and are skipped)."""
    if not folder.is_dir():
        raise ZoobenchError(f"{folder} is not a folder")
    return [
        _row(path) for path in sorted(folder.iterdir()) if path.is_dir() and runfolder.is_run(path)
    ]


def _row(path: Path) -> dict[str, Any]:
    store = RunStore(path)
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row["run"] = str(path)
    try:
        meta = store.read_run()
    except ZoobenchError:
        row["status"] = "run.json damaged"
        return row
    data = meta.get("data") or {}
    sizes = data.get("sizes") or {}
    row.update(
        profile=(meta.get("profile") or {}).get("name"),
        data=f"{data.get('source', '?')} {sizes.get('train', '?')}/{sizes.get('val', '?')}/"
        f"{sizes.get('test', '?')}",
        backend=meta.get("backend"),
        wall=meta.get("wall_seconds"),
    )
    holder = runfolder.holder(path)
    if holder:
        row["status"] = f"running (PID {holder.get('pid')} on {holder.get('host')})"
    else:
        row["status"] = "finished" if meta.get("finished_at") else "unfinished"
    board = store.saved_leaderboard()
    if board is not None and len(board):
        done = board[board["status"] == "done"]
        if len(done):
            row["best"] = str(done["model"].iloc[0])
            row["test_accuracy"] = float(done["test_accuracy"].iloc[0])
    return row


def display(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Rows as people read them (percentages, durations, '-' for what is unknown)."""
    out = []
    for r in rows:
        acc = r["test_accuracy"]
        out.append(
            [
                r["run"],
                r["profile"] or "-",
                r["data"] or "-",
                r["backend"] or "-",
                r["status"],
                r["best"] or "-",
                "-" if acc is None or acc != acc else formatting.percent(acc),
                "-" if r["wall"] is None else formatting.duration(float(r["wall"])),
            ]
        )
    return out
