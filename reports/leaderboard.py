"""The leaderboard: one row per member and ensemble, best first (``benchmark.store.runstore.rank_key``).

Like AutoGluon's ``leaderboard()`` it is a plain pandas DataFrame, so the next step is one pandas
call (``board[board.kind == "pretrained"]``, ``board.to_csv(...)``). Rows are ordered by the same
key that picks the exported best (validation accuracy, then validation loss, members before
ensembles), never by test accuracy; test scores are computed here, from the stored test
probabilities and ``data/y_test.npy``, only to report them.

The validation figures are the store's, never in-sample: an ensemble fit on validation carries its
out-of-fold score (``val_out_of_fold``, a dagger in the tables). Test ECE and NLL are shown before
and after temperature scaling (``ece_uncalibrated`` / ``ece``, ``nll_uncalibrated`` / ``nll``,
``temperature``); test accuracy is the same either way.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from benchmark import formatting
from benchmark.metrics import accuracy, log_loss
from benchmark.store.runstore import ENSEMBLE, MEMBER, Entry, RunStore, rank_key
from reports import scoring
from reports.rundata import RunData, load_run

log = logging.getLogger(__name__)

# benchmark.run.robustness's summary numbers (blank where a run did not measure them), each with
# its 95% Wilson interval in ``*_low`` / ``*_high``.
ROBUSTNESS_COLUMNS = (
    "corruption_accuracy",
    "corruption_accuracy_adabn",
    "corruption_accuracy_tent",
    "fgsm_accuracy",
)
ROBUSTNESS_INTERVALS = tuple(f"{c}_{end}" for c in ROBUSTNESS_COLUMNS for end in ("low", "high"))
# A robustness figure whose interval is wider than this either side is marked "~" (indicative).
INDICATIVE = 0.05
COLUMNS = (
    "rank",
    "model",
    "kind",
    "method",
    "architecture",
    "strategy",
    "input_size",
    "test_accuracy",
    "test_accuracy_low",
    "test_accuracy_high",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "val_accuracy",
    "val_loss",
    "val_out_of_fold",
    "val_loss_calibrated",
    "temperature",
    "ece",
    "ece_uncalibrated",
    "nll",
    "nll_uncalibrated",
    "params",
    "flops",
    "train_seconds",
    "train_images_per_second",
    "images_per_second",
    "status",
    "reason",
    "id",
    *ROBUSTNESS_COLUMNS,
    *ROBUSTNESS_INTERVALS,
)

# Columns measured by the clock: two runs of the same members differ only here (the checks that a
# resumed, distributed or repeated run gives "the same leaderboard" leave them out).
TIMING_COLUMNS = ("train_seconds", "train_images_per_second", "images_per_second")

# Column -> (header, formatter) of the table people read (Markdown and HTML).
DISPLAY = {
    "rank": "#",
    "model": "Model",
    "kind": "Kind",
    "test_accuracy": "Test acc. [95% CI]",
    "corruption_accuracy": "Corrupted acc.",
    "corruption_accuracy_adabn": "+ AdaBN",
    "corruption_accuracy_tent": "+ TENT",
    "fgsm_accuracy": "FGSM acc.",
    "precision_macro": "Macro P",
    "recall_macro": "Macro R",
    "f1_macro": "Macro F1",
    "val_accuracy": "Val acc.",
    "ece": "ECE",
    "nll": "NLL",
    "params": "Params",
    "flops": "FLOPs/img",
    "train_seconds": "Train time",
    "images_per_second": "Img/s",
    "status": "Status",
}


# What a dagger on a validation accuracy means (the report and the console say it under the table).
OUT_OF_FOLD_NOTE = (
    "\u2020 out-of-fold: an ensemble fit on validation (top-k, greedy, stacking) is scored on each "
    "validation fold by its fit on the other folds, never on the rows it was fit on."
)
ROBUSTNESS_NOTE = (
    "Corrupted, AdaBN, TENT and FGSM accuracies carry a 95% Wilson interval on the images they "
    "were measured on (a mean over corruptions: the interval of one proportion on those images, "
    "which is conservative)."
)
INDICATIVE_NOTE = (
    " ~ indicative: its interval is wider than \u00b15 points, too few images to read as more "
    "than a hint."
)
CALIBRATION_NOTE = (
    "ECE and NLL are on test, before \u2192 after temperature scaling (one temperature per row, "
    "fit on validation; accuracy is unchanged)."
)


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
    order = sorted(range(len(board)), key=lambda i: _rank_key(board.iloc[i]))
    board = board.iloc[order].reset_index(drop=True)
    done = board["status"] == "done"
    board.insert(0, "rank", pd.array([i + 1 if d else None for i, d in enumerate(done)], "Int64"))
    for col in ("params", "flops", "input_size"):
        board[col] = pd.array(board[col], dtype="Int64")
    return board


def save_leaderboard(store: RunStore, board: pd.DataFrame) -> None:
    """Write ``runs/NAME/leaderboard.csv`` (through the store, atomically)."""
    store.write_leaderboard(board)


def _rank_key(row: pd.Series) -> tuple:
    kind = ENSEMBLE if row["kind"] == "ensemble" else MEMBER
    return rank_key(row["status"], row["val_accuracy"], row["val_loss"], kind, row["model"])


def _row(run: RunData, entry: Entry, resamples: int, seed: int) -> dict:
    config, metrics = entry.config, entry.metrics
    ensemble = entry.is_ensemble
    status = entry.status
    row = {
        "model": entry.name,
        "kind": "ensemble" if ensemble else str(config.get("kind") or "scratch"),
        "method": config.get("method") if ensemble else None,
        "architecture": None if ensemble else config.get("architecture"),
        "strategy": None if ensemble else config.get("strategy"),
        "input_size": None if ensemble else _number(config.get("input_size")),
        "val_accuracy": _number(metrics.get("val_accuracy")),
        "val_loss": _number(metrics.get("val_loss")),
        "val_out_of_fold": metrics.get("val_scoring") == "out-of-fold",
        "params": _number(metrics.get("params")),
        "flops": _number(metrics.get("flops")),
        "train_seconds": _number(metrics.get("train_seconds")),
        # steady-state training rate, apart from the first epoch's compile (benchmark.train)
        "train_images_per_second": _number(metrics.get("steady_train_images_per_second")),
        "images_per_second": _number(metrics.get("inference_images_per_second")),
        "status": status,
        "reason": str(metrics.get("reason") or ""),
        "id": entry.key,
    }
    if status != "done":
        return row
    summary = (entry.robustness() or {}).get("summary") or {}
    row.update(
        {col: _number(summary.get(col)) for col in (*ROBUSTNESS_COLUMNS, *ROBUSTNESS_INTERVALS)}
    )
    val_probs = run.probs(entry, "val")
    if math.isnan(row["val_accuracy"]) and val_probs is not None:
        row["val_accuracy"] = accuracy(val_probs, run.y_val)
    calibration = run.calibration(entry)
    if calibration is not None:
        row["temperature"] = _number(calibration.get("temperature"))
        row["val_loss_calibrated"] = _number(calibration.get("val_loss_calibrated"))
    test_probs = run.probs(entry, "test")
    if test_probs is not None:
        row.update(_test_scores(test_probs, run.y_test, run.num_classes, resamples, seed))
        row["nll"] = log_loss(test_probs, run.y_test)
        before = test_probs if calibration is None else run.probs(entry, "test", calibrated=False)
        if before is not None:
            row["ece_uncalibrated"] = scoring.expected_calibration_error(before, run.y_test)
            row["nll_uncalibrated"] = log_loss(before, run.y_test)
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


# The columns a terminal has room for (the report shows all of DISPLAY).
CONSOLE = (
    "rank",
    "model",
    "kind",
    "test_accuracy",
    "val_accuracy",
    "params",
    "train_seconds",
    "status",
)


def display_columns(board: pd.DataFrame) -> tuple[str, ...]:
    """The columns people see: every DISPLAY column, less robustness columns no row measured."""
    return tuple(
        col
        for col in DISPLAY
        if col not in ROBUSTNESS_COLUMNS or (col in board and board[col].notna().any())
    )


def display_table(board: pd.DataFrame, columns=None) -> pd.DataFrame:
    """The leaderboard as strings for people: accuracies in %, the CI inline, costs humanised."""
    columns = display_columns(board) if columns is None else columns
    out = pd.DataFrame(index=board.index)
    for col in columns:
        out[DISPLAY[col]] = [_cell(col, row) for _, row in board.iterrows()]
    return out


def console_lines(board: pd.DataFrame, store: RunStore, top: int = 10) -> list[str]:
    """The leaderboard's best ``top`` rows as the console prints them (the report's formatting)."""
    from tabulate import tabulate

    if not len(board):
        return [f"{store.root}: no members or ensembles stored yet"]
    table = display_table(board.head(top), CONSOLE)
    lines = tabulate(
        table, headers="keys", tablefmt="github", showindex=False, disable_numparse=True
    ).splitlines()
    if len(board) > top:
        lines.append(f"... {len(board) - top} more rows in {store.leaderboard_csv}")
    lines += table_notes(board.head(top))
    return lines


def robustness_cell(value, low, high) -> str:
    """A robustness accuracy with its 95% interval, "~" in front when the interval is wider than
    :data:`INDICATIVE` either side (too few images: read it as a hint)."""
    if _missing(value):
        return "-"
    if _missing(low) or _missing(high):
        return formatting.percent(value)
    mark = "~" if (float(high) - float(low)) / 2 > INDICATIVE else ""
    return f"{mark}{formatting.percent(value)} [{100 * low:.1f}, {100 * high:.1f}]"


def _indicative(board: pd.DataFrame) -> bool:
    for col in ROBUSTNESS_COLUMNS:
        low, high = board.get(f"{col}_low"), board.get(f"{col}_high")
        if low is not None and high is not None and ((high - low) / 2 > INDICATIVE).any():
            return True
    return False


def table_notes(board: pd.DataFrame) -> list[str]:
    """The footnotes a table of these rows needs: the dagger's meaning, when a row has one; what
    the robustness columns' intervals and "~" mean, when a row has them."""
    notes = []
    if "val_out_of_fold" in board and any(_flag(v) for v in board["val_out_of_fold"]):
        notes.append(OUT_OF_FOLD_NOTE)
    if any(col in board and board[col].notna().any() for col in ROBUSTNESS_COLUMNS):
        notes.append(ROBUSTNESS_NOTE + (INDICATIVE_NOTE if _indicative(board) else ""))
    return notes


def _cell(col: str, row: pd.Series) -> str:
    value = row[col]
    if col == "status":
        reason = row["reason"]
        return f"{value}: {reason}" if reason and value != "done" else str(value)
    if _missing(value):
        return "-"
    if col == "test_accuracy":
        low, high = row["test_accuracy_low"], row["test_accuracy_high"]
        return f"{formatting.percent(value)} [{100 * low:.1f}, {100 * high:.1f}]"
    if col == "val_accuracy":
        return formatting.percent(value) + ("\u2020" if _flag(row.get("val_out_of_fold")) else "")
    if col in ROBUSTNESS_COLUMNS:
        return robustness_cell(value, row.get(f"{col}_low"), row.get(f"{col}_high"))
    if col in ("precision_macro", "recall_macro", "f1_macro"):
        return formatting.percent(value)
    if col in ("ece", "nll"):  # before -> after calibration; one figure for an uncalibrated row
        before = row.get(f"{col}_uncalibrated")
        calibrated = not _missing(row.get("temperature")) and not _missing(before)
        return f"{before:.3f} \u2192 {value:.3f}" if calibrated else f"{value:.3f}"
    if col in ("params", "flops"):
        return formatting.count(float(value))
    if col == "train_seconds":
        return formatting.duration(float(value))
    if col == "images_per_second":
        return f"{value:,.0f}"
    return str(value)


def _number(value) -> float:
    try:
        return float(value) if value is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _flag(value) -> bool:
    """A boolean column's cell as read back from the CSV too (True, "True", 1)."""
    return not _missing(value) and str(value).strip().lower() in ("true", "1")


def _missing(value) -> bool:
    if value is None or value is pd.NA:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
