"""``zoobench compare RUN_A RUN_B``: two runs' leaderboards side by side on the same test split.

Two runs are comparable only when they scored the same test images with the same labels: else
their accuracies measure different things and a paired test is meaningless, so any difference in
the test split (size, data source, data fingerprint, labels, stored pictures) is refused with one
line saying what differs. Each run's leaderboard is the report's (``reports.leaderboard``: the same
ranking, scores and formatting); each run's best is its first row, and McNemar's test
(``reports.stats``) pairs the two bests' predictions image by image.

This module returns data; the CLI prints it and writes the HTML page.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark import atomic
from benchmark.errors import ZoobenchError
from benchmark.store import runfolder
from benchmark.store.runstore import RunStore
from reports.leaderboard import CONSOLE, build_leaderboard, display_table
from reports.rundata import RunData, load_run
from reports.stats import Comparison, mcnemar, per_class_accuracy, summary_sentence

SUMMARY_HEADERS = (
    "Run",
    "Profile",
    "Data",
    "Seed",
    "Test images",
    "Best",
    "Test acc. [95% CI]",
    "Val acc.",
)
# The leaderboard columns shown for each run (the console's), after the run's label.
BOARD_COLUMNS = CONSOLE
JSON_ROW_COLUMNS = (
    "rank",
    "model",
    "kind",
    "test_accuracy",
    "test_accuracy_low",
    "test_accuracy_high",
    "val_accuracy",
    "params",
    "train_seconds",
    "status",
    "reason",
    "id",
)


@dataclass(frozen=True)
class RunSide:
    """One of the two runs: what made it, its leaderboard and its best row's test correctness."""

    label: str  # the run's name in the tables (run.json's name, else the folder's; paths if equal)
    path: Path
    meta: dict[str, Any]
    board: pd.DataFrame
    correct: np.ndarray  # the best row's test predictions == labels, image by image

    @property
    def data(self) -> dict[str, Any]:
        return self.meta.get("data") or {}

    @property
    def profile(self) -> str:
        profile = self.meta.get("profile")
        return str(profile.get("name", "-")) if isinstance(profile, dict) else str(profile or "-")

    @property
    def source(self) -> str:
        return str(self.data.get("source") or "unknown data")

    @property
    def seed(self) -> Any:
        return self.meta.get("seed", self.data.get("seed"))

    @property
    def test_size(self) -> int:
        return int(len(self.correct))

    @property
    def best(self) -> pd.Series:
        return self.board.iloc[0]


@dataclass(frozen=True)
class RunComparison:
    """Two runs on one test split: both leaderboards and McNemar's test of their bests."""

    a: RunSide
    b: RunSide
    comparison: Comparison  # a / b are "RUN: model"; per_class holds per-class accuracies

    @property
    def sentence(self) -> str:
        """McNemar's test of the two bests in one plain sentence (the report's wording)."""
        return summary_sentence(self.comparison)

    @property
    def split_line(self) -> str:
        """Which test images both runs were scored on: the data source stated with the scores."""
        return f"Both runs scored on the same {self.a.test_size:,} test images of {self.a.source}."

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able data for scripts: the runs, every row, and the test of the bests."""
        t = self.comparison.test
        return {
            "runs": [_side_json(side) for side in (self.a, self.b)],
            "test_split": {
                "images": self.a.test_size,
                "source": self.a.source,
                "fingerprint": self.a.data.get("fingerprint"),
            },
            "rows": [row for side in (self.a, self.b) for row in _rows_json(side)],
            "mcnemar": {
                "a": self.comparison.a,
                "b": self.comparison.b,
                "a_accuracy": self.comparison.a_accuracy,
                "b_accuracy": self.comparison.b_accuracy,
                "a_only": t.a_only,
                "b_only": t.b_only,
                "statistic": t.statistic,
                "pvalue": t.pvalue,
                "method": t.method,
                "sentence": self.sentence,
            },
        }


def compare_runs(path_a: str | Path, path_b: str | Path) -> RunComparison:
    """Load both runs, refuse them unless their test splits are the same, and compare their bests."""
    path_a, path_b = Path(path_a), Path(path_b)
    run_a, run_b = _load(path_a), _load(path_b)
    labels = _labels(path_a, path_b, run_a.meta, run_b.meta)
    _check_same_split(path_a, run_a, path_b, run_b)
    side_a = _side(labels[0], path_a, run_a)
    side_b = _side(labels[1], path_b, run_b)
    y_test = run_a.y_test
    assert y_test is not None  # _check_same_split refused a run without test labels
    comparison = Comparison(
        title="Best of each run",
        a=f"{side_a.label}: {side_a.best['model']}",
        b=f"{side_b.label}: {side_b.best['model']}",
        a_accuracy=float(side_a.correct.mean()),
        b_accuracy=float(side_b.correct.mean()),
        test=mcnemar(side_a.correct, side_b.correct),
        per_class=per_class_accuracy(side_a.correct, side_b.correct, y_test, run_a.class_names),
    )
    return RunComparison(side_a, side_b, comparison)


def _load(path: Path) -> RunData:
    if not path.exists():
        raise ZoobenchError(f"{path} does not exist")
    if not path.is_dir() or not runfolder.is_run(path):
        raise ZoobenchError(
            f"{path} is not a zoobench run folder (no run.json or .zoobench marker)"
        )
    return load_run(RunStore(path))


def _labels(path_a: Path, path_b: Path, meta_a: dict, meta_b: dict) -> tuple[str, str]:
    """The runs' names (run.json, else the folder's); their paths when the names are the same."""
    name_a = str(meta_a.get("name") or path_a.name)
    name_b = str(meta_b.get("name") or path_b.name)
    if name_a != name_b:
        return name_a, name_b
    return (str(path_a), str(path_b)) if str(path_a) != str(path_b) else (name_a, name_b)


def _check_same_split(path_a: Path, run_a: RunData, path_b: Path, run_b: RunData) -> None:
    """Refuse two runs that were not scored on the same test images, saying what differs."""
    for path, run in ((path_a, run_a), (path_b, run_b)):
        if run.y_test is None:
            raise ZoobenchError(
                f"{path} stored no test labels: it cannot be scored on a test split"
            )
    data_a, data_b = run_a.meta.get("data") or {}, run_b.meta.get("data") or {}
    src_a, src_b = data_a.get("source") or "unknown data", data_b.get("source") or "unknown data"
    n_a, n_b = len(run_a.y_test), len(run_b.y_test)  # type: ignore[arg-type]
    prefix = "test splits differ:"
    if n_a != n_b:
        tail = "" if src_a == src_b else f" of {src_b}"
        raise ZoobenchError(
            f"{prefix} {path_a} has {n_a} test images of {src_a}, {path_b} {n_b}{tail}"
        )
    if src_a != src_b:
        raise ZoobenchError(
            f"{prefix} {path_a}'s {n_a} test images are from {src_a}, {path_b}'s from {src_b}"
        )
    fp_a, fp_b = data_a.get("fingerprint"), data_b.get("fingerprint")
    if fp_a and fp_b and fp_a != fp_b:
        raise ZoobenchError(
            f"{prefix} {path_a} and {path_b} read different files of {src_a} "
            f"(data fingerprint {str(fp_a)[:12]} vs {str(fp_b)[:12]})"
        )
    if run_a.class_names and run_b.class_names and run_a.class_names != run_b.class_names:
        raise ZoobenchError(
            f"{prefix} {path_a} and {path_b} name their classes differently "
            f"({', '.join(run_a.class_names)} vs "
            f"{', '.join(run_b.class_names)})"
        )
    differ = int(np.sum(run_a.y_test != run_b.y_test))
    if differ:
        raise ZoobenchError(
            f"{prefix} {path_a} and {path_b} have {n_a} test images of {src_a} "
            f"each, but {differ} of their labels differ"
        )
    hash_a, hash_b = _test_images_hash(run_a.store), _test_images_hash(run_b.store)
    if hash_a and hash_b and hash_a != hash_b:
        subset = any((d.get("split") or {}).get("test_size") for d in (data_a, data_b))
        seeds = run_a.meta.get("seed") != run_b.meta.get("seed")
        why = (
            " (each seed draws its own test_size subset: compare runs of one seed, or on the "
            "whole test set)"
            if subset and seeds
            else ""
        )
        raise ZoobenchError(
            f"{prefix} {path_a} and {path_b} have the same {n_a} test labels of "
            f"{src_a}, but different stored test images{why}"
        )


def _test_images_hash(store: RunStore) -> str | None:
    """SHA-256 of the stored test pictures (shape, dtype and pixels); None when not stored."""
    if not store.has_array("x_test"):
        return None
    try:
        x = store.load_array("x_test")
    except (OSError, ValueError) as exc:
        raise ZoobenchError(f"{store.root}: the stored test images cannot be read ({exc})") from exc
    digest = hashlib.sha256(f"{x.shape}{x.dtype}".encode())
    digest.update(np.ascontiguousarray(x).tobytes())
    return digest.hexdigest()


def _side(label: str, path: Path, run: RunData) -> RunSide:
    """One run's leaderboard (the report's ranking) and its best row's test correctness."""
    board = build_leaderboard(run)
    if board.empty or board["status"].iloc[0] != "done":
        raise ZoobenchError(f"{path} has no finished members or ensembles to compare")
    best = board.iloc[0]
    probs = run.probs(run.entry(str(best["id"])), "test")
    if probs is None:
        raise ZoobenchError(
            f"{path}: its best row, {best['model']}, has no usable stored test probabilities"
        )
    correct = probs.argmax(axis=1) == run.y_test
    return RunSide(label, path, run.meta, board, correct)


# ---- what people read: tables for the console, a small HTML page --------------------------------


def summary_table(result: RunComparison) -> list[list[str]]:
    """One line per run: what made it (profile, data source, seed, test size) and its best row."""
    rows = []
    for side in (result.a, result.b):
        shown = display_table(side.board.head(1), ("test_accuracy", "val_accuracy")).iloc[0]
        rows.append(
            [
                side.label,
                side.profile,
                side.source,
                _text(side.seed),
                f"{side.test_size:,}",
                str(side.best["model"]),
                *shown.tolist(),
            ]
        )
    return rows


def board_headers() -> list[str]:
    """The side-by-side leaderboard's headers: the run, then the console's columns."""
    from reports.leaderboard import DISPLAY

    return ["Run", *(DISPLAY[c] for c in BOARD_COLUMNS)]


def board_table(result: RunComparison) -> list[list[str]]:
    """Both leaderboards, each in its own ranked order, every row labelled with its run."""
    rows = []
    for side in (result.a, result.b):
        shown = display_table(side.board, BOARD_COLUMNS)
        rows += [[side.label, *values] for values in shown.itertuples(index=False)]
    return [[str(v) for v in row] for row in rows]


def render_html(result: RunComparison) -> str:
    """A small self-contained page (no external files): the two tables and McNemar's sentence."""
    title = f"zoobench compare: {result.a.label} vs {result.b.label}"
    return (
        "\n".join(
            [
                "<!DOCTYPE html>",
                '<html lang="en">',
                f'<head><meta charset="utf-8"><title>{escape(title)}</title><style>{_CSS}</style></head>',
                "<body>",
                f"<h1>{escape(title)}</h1>",
                f'<p class="muted">{escape(result.split_line)}</p>',
                "<h2>Runs</h2>",
                _table_html(list(SUMMARY_HEADERS), summary_table(result), text_cols={0, 1, 2, 5}),
                "<h2>Best of each run: McNemar's test</h2>",
                f"<p>{escape(result.sentence)}</p>",
                "<h2>Leaderboards</h2>",
                _table_html(board_headers(), board_table(result), text_cols={0, 2, 3, 8}),
                "</body>",
                "</html>",
            ]
        )
        + "\n"
    )


def write_html(result: RunComparison, path: str | Path) -> Path:
    """Write the page atomically (a reader never sees half a page)."""
    path = Path(path)
    if path.is_dir():
        raise ZoobenchError(
            f"--html {path} is a folder: give a file name, e.g. {path}/compare.html"
        )
    if not path.parent.is_dir():
        raise ZoobenchError(f"--html {path}: folder {path.parent} does not exist")
    atomic.write_text(path, render_html(result))
    return path


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;"
    "color:#222}table{border-collapse:collapse;font-size:.85rem;margin:.6rem 0}"
    "th,td{padding:.3rem .55rem;border-bottom:1px solid #e4e4e4;text-align:right;"
    "white-space:nowrap}th{background:#f3f5f8}.text{text-align:left;white-space:normal}"
    ".muted{color:#666}.wide{overflow-x:auto;max-width:100%}"
    # A narrow window scrolls the table inside its box; the page itself never scrolls sideways.
)


def _table_html(headers: list[str], rows: list[list[str]], text_cols: set[int]) -> str:
    def cls(i: int) -> str:
        return "text" if i in text_cols else "num"

    head = "".join(
        f'<th class="{cls(i)}" scope="col">{escape(h)}</th>' for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{cls(i)}">{escape(v)}</td>' for i, v in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


# ---- JSON --------------------------------------------------------------------------------------


def _side_json(side: RunSide) -> dict[str, Any]:
    best = side.best
    return {
        "run": side.label,
        "path": str(side.path),
        "profile": side.profile,
        "source": side.source,
        "seed": side.seed,
        "test_images": side.test_size,
        "fingerprint": side.data.get("fingerprint"),
        "best": str(best["model"]),
        "best_id": str(best["id"]),
        "test_accuracy": _plain(best["test_accuracy"]),
        "val_accuracy": _plain(best["val_accuracy"]),
    }


def _rows_json(side: RunSide) -> list[dict[str, Any]]:
    return [
        {"run": side.label, **{c: _plain(row[c]) for c in JSON_ROW_COLUMNS}}
        for _, row in side.board.iterrows()
    ]


def _plain(value: Any) -> Any:
    """A pandas / numpy cell as plain JSON (NaN and NA as null)."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value


def _text(value: Any) -> str:
    return "-" if value is None else str(value)
