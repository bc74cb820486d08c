"""The leaderboard: one row per member and ensemble, best first by validation accuracy.

Like AutoGluon's ``leaderboard()`` it is a plain pandas DataFrame, so the next step is one pandas
call (``board[board.kind == "pretrained"]``, ``board.to_csv(...)``). Rows are ordered by the score
selection used (validation accuracy), never by test accuracy; test scores are computed here, from
the stored test probabilities and ``data/y_test.npy``, only to report them.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from benchmark import atomic
from benchmark.store import Entry, RunStore
from reports import scoring
from reports.rundata import RunData, entry_key, is_ensemble, load_run

log = logging.getLogger(__name__)

COLUMNS = (
    "rank", "model", "kind", "method", "architecture", "strategy", "input_size",
    "test_accuracy", "test_accuracy_low", "test_accuracy_high",
    "precision_macro", "recall_macro", "f1_macro", "val_accuracy", "ece",
    "params", "flops", "train_seconds", "images_per_second", "status", "reason", "id",
)  # fmt: skip

# Column -> (header, formatter) of the table people read (Markdown and HTML).
DISPLAY = {
    "rank": "#",
    "model": "Model",
    "kind": "Kind",
    "test_accuracy": "Test acc. [95% CI]",
    "precision_macro": "Macro P",
    "recall_macro": "Macro R",
    "f1_macro": "Macro F1",
    "val_accuracy": "Val acc.",
    "ece": "ECE",
    "params": "Params",
    "flops": "FLOPs/img",
    "train_seconds": "Train time",
    "images_per_second": "Img/s",
    "status": "Status",
}

_STATUS_ORDER = {"done": 0, "incomplete": 1, "running": 1, "skipped": 2, "failed": 3}


def leaderboard(
    store: RunStore, *, save: bool = False, resamples: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """The run's leaderboard as a DataFrame; ``save`` also writes ``leaderboard.csv`` atomically."""
    board = build_leaderboard(load_run(store), resamples=resamples, seed=seed)
    if save:
        save_leaderboard(store, board)
    return board


def build_leaderboard(run: RunData, *, resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Score every entry of ``run`` and order the rows (see the module docstring)."""
    rows = [_row(run, entry, resamples, seed) for entry in run.entries]
    board = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "rank"])
    if board.empty:
        return pd.DataFrame(columns=COLUMNS)
    board["_order"] = board["status"].map(_STATUS_ORDER).fillna(9)
    board["_val"] = board["val_accuracy"].fillna(-1.0)
    board = board.sort_values(
        ["_order", "_val", "kind", "model"], ascending=[True, False, True, True], kind="stable"
    ).drop(columns=["_order", "_val"])
    board = board.reset_index(drop=True)
    done = board["status"] == "done"
    board.insert(0, "rank", pd.array([i + 1 if d else None for i, d in enumerate(done)], "Int64"))
    for col in ("params", "flops", "input_size"):
        board[col] = pd.array(board[col], dtype="Int64")
    return board


def save_leaderboard(store: RunStore, board: pd.DataFrame) -> None:
    """Write ``runs/NAME/leaderboard.csv`` atomically."""
    with atomic.atomic_path(store.leaderboard_csv) as tmp:
        board.to_csv(tmp, index=False)


def _row(run: RunData, entry: Entry, resamples: int, seed: int) -> dict:
    config, metrics = entry.config, entry.metrics
    ensemble = is_ensemble(entry)
    status = str(metrics.get("status", "done"))
    row = {
        "model": display_name(entry),
        "kind": "ensemble" if ensemble else str(config.get("kind") or "scratch"),
        "method": config.get("method") if ensemble else None,
        "architecture": None if ensemble else config.get("architecture"),
        "strategy": None if ensemble else config.get("strategy"),
        "input_size": None if ensemble else _number(config.get("input_size")),
        "val_accuracy": _number(metrics.get("val_accuracy")),
        "params": _number(metrics.get("params")),
        "flops": _number(metrics.get("flops")),
        "train_seconds": _number(metrics.get("train_seconds")),
        "images_per_second": _number(metrics.get("inference_images_per_second")),
        "status": status,
        "reason": str(metrics.get("reason") or ""),
        "id": entry_key(entry),
    }
    if status != "done":
        return row
    val_probs = run.probs(entry, "val")
    if math.isnan(row["val_accuracy"]) and val_probs is not None:
        row["val_accuracy"] = scoring.accuracy(val_probs, run.y_val)
    test_probs = run.probs(entry, "test")
    if test_probs is not None:
        row.update(_test_scores(test_probs, run.y_test, run.num_classes, resamples, seed))
    return row


def _test_scores(probs, labels, num_classes: int, resamples: int, seed: int) -> dict:
    from sklearn.metrics import precision_recall_fscore_support

    predicted = probs.argmax(axis=1)
    interval = scoring.bootstrap_accuracy(predicted == labels, resamples=resamples, seed=seed)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=np.arange(num_classes), average="macro", zero_division=0
    )
    return {
        "test_accuracy": interval.estimate,
        "test_accuracy_low": interval.low,
        "test_accuracy_high": interval.high,
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
        "ece": scoring.expected_calibration_error(probs, labels),
    }


def display_name(entry: Entry) -> str:
    """The config's name; else architecture / strategy @ input size (members) or the method."""
    config = entry.config
    if config.get("name"):
        return str(config["name"])
    if is_ensemble(entry):
        return f"{config.get('method') or 'ensemble'} ensemble"
    name = str(config.get("architecture") or entry.path.name)
    if config.get("strategy"):
        name += f" / {config['strategy']}"
    if config.get("input_size") and config.get("kind") == "pretrained":
        name += f" @{config['input_size']}px"
    return name


def display_table(board: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard as strings for people: accuracies in %, the CI inline, costs humanised."""
    out = pd.DataFrame(index=board.index)
    for col, header in DISPLAY.items():
        out[header] = [_cell(col, row) for _, row in board.iterrows()]
    return out


def _cell(col: str, row: pd.Series) -> str:
    value = row[col]
    if col == "status":
        reason = row["reason"]
        return f"{value}: {reason}" if reason and value != "done" else str(value)
    if _missing(value):
        return "-"
    if col == "test_accuracy":
        low, high = row["test_accuracy_low"], row["test_accuracy_high"]
        return f"{100 * value:.2f}% [{100 * low:.1f}, {100 * high:.1f}]"
    if col in ("val_accuracy", "precision_macro", "recall_macro", "f1_macro"):
        return f"{100 * value:.2f}%"
    if col == "ece":
        return f"{value:.3f}"
    if col in ("params", "flops"):
        return human_count(float(value))
    if col == "train_seconds":
        return human_seconds(float(value))
    if col == "images_per_second":
        return f"{value:,.0f}"
    return str(value)


def human_count(value: float) -> str:
    """1234567 -> '1.23M': parameter and FLOP counts at a glance."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.0f}"


def human_seconds(value: float) -> str:
    """312.5 -> '5m 12s'."""
    if value < 60:
        return f"{value:.1f}s"
    minutes, seconds = divmod(int(round(value)), 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _number(value) -> float:
    try:
        return float(value) if value is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _missing(value) -> bool:
    if value is None or value is pd.NA:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
