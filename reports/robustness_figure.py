"""The report's robustness part: accuracy against severity per generated corruption, and the settings.

:func:`robustness_figure` draws, for the top leaderboard rows that have a robustness record
(``benchmark.run.robustness``, read through the run store), one panel per corruption: accuracy against
severity (severity 0 is the same images uncorrupted), solid without adaptation and dashed with
AdaBN (dotted with TENT). :func:`robustness_tables` gives the best such row's accuracy per corruption
and severity, RobustBench's layout, one table per adaptation, every cell with its 95% interval.
:func:`robustness_about` says what the "generated corruptions" were, with their parameters, and how
the adaptations were run, for the report's settings table. A run that measured no robustness gets
none of them.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.data.corruptions import describe
from benchmark.errors import ZoobenchError
from reports.figures import DPI, MAX_WIDTH_IN, Figure, distinct_labels, save_png
from reports.leaderboard import robustness_cell
from reports.report import Table
from reports.rundata import RunData

log = logging.getLogger(__name__)

KEY = "robustness"
TITLE = "Accuracy against corruption severity"
CAPTION = (
    "Generated corruptions of the test images (parameters under Data and settings): "
    "accuracy per severity for the top leaderboard rows, severity 0 being the same images "
    "uncorrupted; solid without adaptation, dashed with AdaBN (BN statistics re-estimated on "
    "each set of images, the clean one included), dotted with TENT where measured."
)
TOP_ROWS = 4


def _records(run: RunData, board: pd.DataFrame) -> list[tuple[str, dict[str, Any]]]:
    """(model name, robustness record) of the finished rows with a table, in leaderboard order."""
    out = []
    for _, row in board[board["status"] == "done"].iterrows():
        try:
            record = run.entry(str(row["id"])).robustness()
        except KeyError:
            continue
        if record and record.get("table"):
            out.append((str(row["model"]), record))
    return out


def robustness_about(run: RunData, board: pd.DataFrame) -> list[tuple[str, str]]:
    """The settings rows naming the generated corruptions and the FGSM attack ([] when none)."""
    records = [r for _, r in _records(run, board)]
    if not records:
        return []
    config = records[0].get("config") or {}
    try:
        corruptions = describe(config["corruptions"], config["severities"])
    except (KeyError, IndexError, TypeError):
        return []
    lines = [
        (
            "Generated corruptions",
            f"{records[0]['summary'].get('images', '-')} test images (seeded, class-stratified, "
            f"only for reporting); {corruptions}",
        )
    ]
    summary = records[0]["summary"]
    batches = summary.get("adapt_batches") or []
    if len(batches) == 2:
        sizes = str(batches[0]) if batches[0] == batches[1] else f"{batches[0]}-{batches[1]}"
        how = f"in batches of {sizes} images"
    else:
        how = "in batches"
    if summary.get("adapt_note"):
        how += f" ({summary['adapt_note']})"
    if config.get("adabn"):
        lines.append(
            (
                "Adaptation (AdaBN)",
                "each member's BatchNormalization statistics set to the mean and variance over "
                "the whole unlabeled corrupted set of each (corruption, severity), passed "
                f"{how} (the published protocol: the whole set, or batches of at least 200); "
                "ensembles combine their members' adapted predictions",
            )
        )
    if config.get("tent"):
        lines.append(
            (
                "Adaptation (TENT)",
                "Wang et al. 2021: each batch normalised by its own statistics, then one Adam step "
                "(learning rate 0.001) on the BN scales and shifts against the mean prediction "
                f"entropy; online over the set {how}, reset for every (corruption, severity)",
            )
        )
    if config.get("fgsm_images"):
        lines.append(
            (
                "Adversarial (FGSM)",
                f"one signed-gradient step of {config.get('fgsm_epsilon')} pixels (0-255 "
                f"input) on {config['fgsm_images']} test images; ensembles through the fused "
                "model",
            )
        )
    return lines


MODES = (
    ("accuracy", "no adaptation"),
    ("accuracy_adabn", "with AdaBN"),
    ("accuracy_tent", "with TENT"),
)


def robustness_tables(run: RunData, board: pd.DataFrame) -> list[Table]:
    """The best row's accuracy per corruption (rows) and severity (columns), with the clean images
    and the mean; one table per adaptation measured. Cells are "accuracy [95% interval]"."""
    records = _records(run, board)
    if not records:
        return []
    model, record = records[0]
    summary = record["summary"]
    table = record["table"]
    severities = sorted({int(r["severity"]) for r in table})
    corruptions = list(dict.fromkeys(r["corruption"] for r in table))
    images = int(summary.get("images") or 0)
    out = []
    for column, label in MODES:
        if not any(r.get(column) is not None for r in table):
            continue
        cells = {(r["corruption"], int(r["severity"])): r for r in table}
        rows = []
        for name in corruptions:
            values = [cells.get((name, s), {}) for s in severities]
            row = {"corruption": name}
            for s, cell in zip(severities, values, strict=True):
                row[f"severity {s}"] = _cell(cell.get(column), images)
            row["mean"] = _cell(_mean([c.get(column) for c in values]), images)
            rows.append(row)
        mean_row = {"corruption": "mean"}
        for s in severities:
            mean_row[f"severity {s}"] = _cell(
                _mean([cells.get((n, s), {}).get(column) for n in corruptions]), images
            )
        mean_row["mean"] = _cell(_mean([r.get(column) for r in table]), images)
        rows.append(mean_row)
        clean_key = "clean_accuracy" + column[len("accuracy") :]
        clean = summary.get(clean_key)
        caption = (
            f"{model}, the best row with a robustness record: accuracy on {images} test images "
            f"per corruption and severity, {label}, each with its 95% Wilson interval; clean "
            f"images {robustness_cell(clean, *_wilson(clean, images))}. A mean is given the "
            "interval of one proportion on the same images (conservative); ~ marks an interval "
            "wider than \u00b15 points."
        )
        out.append(
            Table(
                key=f"robustness-{column}",
                title=f"Accuracy by corruption and severity, {label}",
                caption=caption,
                frame=pd.DataFrame(
                    rows, columns=["corruption", *(f"severity {s}" for s in severities), "mean"]
                ),
            )
        )
    return out


def _mean(values: list) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def _wilson(value, n: int) -> tuple[float, float]:
    from benchmark.metrics import wilson_interval

    return wilson_interval(value, n) if value is not None else (float("nan"), float("nan"))


def _cell(value, n: int) -> str:
    return robustness_cell(value, *_wilson(value, n)) if value is not None else "-"


def robustness_figure(
    run: RunData, board: pd.DataFrame, out_dir: str | os.PathLike
) -> Figure | None:
    """Draw the figure into ``out_dir`` (None when the run measured no robustness)."""
    records = _records(run, board)
    if not records:
        return None
    figure = Figure(KEY, TITLE, CAPTION)
    path = Path(out_dir) / f"{KEY}.png"
    try:
        _draw(records[:TOP_ROWS], path)
        figure.path = path
    except (ZoobenchError, KeyError, TypeError, ValueError) as exc:
        log.warning("figure %s could not be drawn: %s", KEY, exc)
        figure.note = f"could not be drawn ({type(exc).__name__}: {exc})"
        path.unlink(missing_ok=True)
    return figure


def _draw(records: list[tuple[str, dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    corruptions = list(dict.fromkeys(row["corruption"] for _, r in records for row in r["table"]))
    labels = distinct_labels([model for model, _ in records], width=40, lines=1)
    cols = min(4, len(corruptions))
    rows = math.ceil(len(corruptions) / cols)
    colors = sns.color_palette("colorblind", len(records))
    rc = {
        "figure.dpi": DPI,
        "axes.titlesize": 10,
        "axes.labelsize": 9,
        "xtick.labelsize": 8,
        "ytick.labelsize": 8,
        "legend.fontsize": 8,
    }
    with sns.axes_style("whitegrid"), plt.rc_context(rc):
        width = min(3.0 * cols, MAX_WIDTH_IN)
        fig, axes = plt.subplots(
            rows, cols, figsize=(width, width / cols * 0.9 * rows), squeeze=False, sharey=True
        )
        try:
            for ax, name in zip(axes.ravel(), corruptions, strict=False):
                for color, label, (_, record) in zip(colors, labels, records, strict=True):
                    table = sorted(
                        (r for r in record["table"] if r["corruption"] == name),
                        key=lambda r: r["severity"],
                    )
                    summary = record["summary"]
                    for column, style in (
                        ("accuracy", {"marker": "o", "label": label}),
                        ("accuracy_adabn", {"marker": ".", "linestyle": "--"}),
                        ("accuracy_tent", {"marker": "x", "linestyle": ":"}),
                    ):
                        if any(r.get(column) is None for r in table):
                            continue
                        clean = summary.get(f"clean_{column}")  # severity 0: the clean images
                        xs = [0] * (clean is not None) + [r["severity"] for r in table]
                        ys = [clean] * (clean is not None) + [r[column] for r in table]
                        ax.plot(xs, ys, color=color, **style)
                ax.set_xticks(
                    sorted(
                        {
                            0,
                            *(
                                r["severity"]
                                for _, rec in records
                                for r in rec["table"]
                                if r["corruption"] == name
                            ),
                        }
                    )
                )
                ax.set_title(name.replace("_", " "))
                ax.set_xlabel("severity (0: clean)")
                ax.set_ylim(0, 1)
                ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
            for ax in axes[:, 0]:
                ax.set_ylabel("accuracy")
            for ax in axes.ravel()[len(corruptions) :]:
                ax.axis("off")
            handles, labels = axes.ravel()[0].get_legend_handles_labels()
            fig.legend(
                handles,
                labels,
                loc="lower center",
                ncols=min(4, len(labels)),
                bbox_to_anchor=(0.5, -0.02),
                frameon=False,
            )
            fig.tight_layout(rect=(0, 0.05, 1, 1))
            save_png(fig, path, layout=False)
        finally:
            plt.close(fig)
