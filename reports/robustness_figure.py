"""The report's robustness part: accuracy against severity per generated corruption, and the settings.

:func:`robustness_figure` draws, for the top leaderboard rows that have a robustness record
(``benchmark.run.robustness``, read through the run store), one panel per corruption: accuracy against
severity (severity 0 is the same images uncorrupted), solid without adaptation and dashed with
AdaBN. :func:`robustness_about` says what the "generated corruptions" were, with their parameters,
for the report's settings table. A run that measured no robustness gets neither.
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
from reports.rundata import RunData

log = logging.getLogger(__name__)

KEY = "robustness"
TITLE = "Accuracy against corruption severity"
CAPTION = (
    "Generated corruptions of the test images (parameters under Data and settings): "
    "accuracy per severity for the top leaderboard rows, severity 0 being the same images "
    "uncorrupted; solid without adaptation, dashed with AdaBN (BN statistics re-estimated on "
    "each set of images, the clean one included)."
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
    if config.get("adabn"):
        lines.append(
            (
                "Adaptation",
                "AdaBN: each member's BatchNormalization statistics re-estimated "
                "on the unlabeled images of each (corruption, severity); ensembles combine "
                "their members' adapted predictions",
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
