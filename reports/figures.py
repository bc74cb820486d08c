"""The report's figures, one PNG each, in one style; each skips with a note when its inputs are missing.

Every figure function takes the loaded run and the leaderboard and either writes its PNG or raises
:class:`Skip` with a sentence for the report ("no ensemble has finished yet"). A report on an
unfinished run therefore shows what exists and says what does not.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark import atomic, metrics
from benchmark.errors import ZoobenchError
from benchmark.formatting import count, duration
from reports import scoring
from reports.rundata import RunData

log = logging.getLogger(__name__)

# Figures are drawn for a page that shows them at CSS_DPI (the web's 96 px per inch) and rendered at
# twice that, so labels stay sharp on high-density screens and when zoomed; the HTML page sets each
# image's displayed size to its drawn size (Figure.width/height), never larger.
CSS_DPI = 96
DPI = 2 * CSS_DPI
MAX_WIDTH_IN = 12.0  # the page's content column (1200 CSS px) at CSS_DPI, less a margin
KIND_COLORS = {"scratch": "#0173b2", "pretrained": "#de8f05", "ensemble": "#029e73"}
MISTAKES = 16
TOP_MULTIPLES = 6
MAX_CURVES = 12


class Skip(Exception):
    """A figure cannot be drawn from what the run has stored (yet); the message says why."""


@dataclass
class Figure:
    """One figure of the report: its PNG (None when skipped) and what to say about it."""

    key: str
    title: str
    caption: str
    path: Path | None = None
    note: str = ""
    width: int = 0  # CSS pixels the figure was drawn for (0 while not drawn)
    height: int = 0


@dataclass(frozen=True)
class Picks:
    """The leaderboard rows the figures are about (ids, None when absent)."""

    best: str | None
    best_member: str | None
    best_ensemble: str | None
    top_members: list[str]


def picks(board: pd.DataFrame) -> Picks:
    """Best rows by validation accuracy (the leaderboard order) among those with test scores."""
    scored = board[(board["status"] == "done") & board["test_accuracy"].notna()]
    members = scored[scored["kind"] != "ensemble"]
    ensembles = scored[scored["kind"] == "ensemble"]

    def first(frame: pd.DataFrame) -> str | None:
        return str(frame["id"].iloc[0]) if len(frame) else None

    return Picks(
        first(scored), first(members), first(ensembles), list(members["id"].head(TOP_MULTIPLES))
    )


def make_figures(run: RunData, board: pd.DataFrame, out_dir: str | os.PathLike) -> list[Figure]:
    """Draw every figure into ``out_dir``; skipped ones come back with ``path=None`` and a note."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = picks(board)
    figures = []
    for key, title, caption, draw in _FIGURES:
        figure = Figure(key, title, caption)
        path = out_dir / f"{key}.png"
        try:
            with _style():
                draw(run, board, chosen, path)
            figure.path = path
            figure.width, figure.height = drawn_size(path)
        except Skip as skip:
            figure.note = str(skip)
            path.unlink(missing_ok=True)  # a stale PNG from an earlier build must not linger
        except Exception as exc:  # one broken figure must not cost the rest of a long run's report
            log.exception("figure %s failed", key)
            figure.note = f"could not be drawn ({type(exc).__name__}: {exc})"
            path.unlink(missing_ok=True)
        figures.append(figure)
    return figures


# ---- style and saving ----------------------------------------------------------------------------
@contextlib.contextmanager
def _style() -> Iterator[None]:
    import matplotlib.pyplot as plt
    import seaborn as sns

    rc = {
        "figure.dpi": DPI,
        "axes.titlesize": 10,
        "axes.labelsize": 9,
        "xtick.labelsize": 8,
        "ytick.labelsize": 8,
        "legend.fontsize": 8,
        "axes.titleweight": "bold",
    }
    with sns.axes_style("whitegrid"), plt.rc_context(rc):
        try:
            yield
        finally:
            plt.close("all")


def save_png(fig, path: Path, layout: bool = True, photos: bool = False) -> None:
    """Write ``fig`` as a PNG at :data:`DPI`. A chart (not ``photos``) is stored with a 256-colour
    palette: it looks the same and takes about a third of the bytes, which the self-contained
    HTML page carries as base64; pictures keep every colour."""
    import io

    from PIL import Image

    if layout:  # False: the figure was laid out already (one with a shared colour bar)
        fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        if photos:
            fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
            return
        buffer = io.BytesIO()  # fast to write and read back: compressed once, after quantizing
        fig.savefig(
            buffer, format="png", dpi=DPI, bbox_inches="tight", pil_kwargs={"compress_level": 1}
        )
        chart = Image.open(buffer).convert("RGB")
        chart = chart.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        chart.save(tmp, format="PNG", dpi=(DPI, DPI))


def drawn_size(path: str | os.PathLike) -> tuple[int, int]:
    """The (width, height) in CSS pixels a PNG was drawn for: its pixels at its recorded dpi."""
    from PIL import Image

    with Image.open(path) as image:
        dpi = float((image.info.get("dpi") or (CSS_DPI,))[0]) or CSS_DPI
        return round(image.width * CSS_DPI / dpi), round(image.height * CSS_DPI / dpi)


def shorten(name: str, width: int) -> str:
    """``name`` in at most ``width`` characters, cut in the middle: members of one architecture
    differ at the end ("efficientnet_lite0 (fine-tuning)"), so the end is kept."""
    name = str(name)
    if len(name) <= width:
        return name
    tail = (width - 1) // 2
    return name[: width - 1 - tail].rstrip() + "…" + name[len(name) - tail :].lstrip()


def wrap_label(name: str, width: int = 24, lines: int = 2) -> str:
    """``name`` wrapped onto at most ``lines`` lines of ``width`` characters; when it does not fit,
    the first lines keep the start and the last line the end ("…" marks the cut), so members of one
    architecture, which differ at the end, do not read the same."""
    text = " ".join(str(name).split())
    if lines <= 1:
        return shorten(text, width)
    wrapped = textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False) or [""]
    if len(wrapped) > lines or max(map(len, wrapped)) > width:  # spaces alone do not do: hyphens
        wrapped = textwrap.wrap(text, width, break_on_hyphens=True)
    if len(wrapped) > lines:
        head, end = wrapped[: lines - 1], 0
        for line in head:  # where the kept lines end in the text (wrap drops spaces at breaks)
            end = text.index(line, end) + len(line)
        rest = text[end:].strip()
        wrapped = [*head, "…" + rest[len(rest) - (width - 1) :].lstrip()]
    return "\n".join(wrapped)


def distinct_labels(names: list[str], width: int = 24, lines: int = 2) -> list[str]:
    """:func:`wrap_label` of each name, numbered ("1. ...") if two would still read the same."""
    labels = [wrap_label(n, width, lines) for n in names]
    if len(set(labels)) < len(labels):
        labels = [f"{i}. {label}" for i, label in enumerate(labels, start=1)]
    return labels


def _names(board: pd.DataFrame) -> pd.Series:
    return board.set_index("id")["model"]


def _test_probs(run: RunData, key: str | None, what: str) -> np.ndarray:
    if key is None:
        raise Skip(f"no {what} has test predictions yet")
    probs = run.probs(run.entry(key), "test")
    if probs is None:
        raise Skip(f"the {what} has no usable test probabilities")
    return probs


# ---- the figures ---------------------------------------------------------------------------------
def sample_grid(run: RunData, board: pd.DataFrame, chosen: Picks, path: Path) -> None:
    """The 5x5 grid of test pictures with class names (data/sample_x.npy, sample_y.npy)."""
    from reports.grid import sample_grid as draw_grid

    try:
        images, labels = run.store.sample()
    except FileNotFoundError as exc:
        raise Skip("data/sample_x.npy or data/sample_y.npy is missing") from exc
    if len(images) == 0 or len(images) != len(labels) or images.ndim != 4:
        raise Skip("data/sample_x.npy and sample_y.npy do not hold matching images and labels")
    if int(labels.max()) >= run.num_classes:
        raise Skip("data/sample_y.npy has labels beyond the run's classes")
    draw_grid(
        images,
        labels,
        run.class_names,
        path,
        title=(run.meta.get("data") or {}).get("source"),
        dpi=DPI,
    )


def heatmap(
    ax,
    matrix: np.ndarray,
    labels,
    *,
    cmap,
    vmin: float,
    vmax: float,
    fmt: str | None = None,
    colorbar: str | None = None,
    percent: bool = False,
):
    """A square-cell heatmap with its labels (None: none), values written in when ``fmt`` is given
    and a colour bar labelled ``colorbar``; returns the mesh so a figure can share its colour bar.

    Plain matplotlib rather than seaborn's heatmap, which draws the whole figure once per call to
    test its tick labels for overlap: a report's seven matrices took seconds more that way.
    """
    from matplotlib.colors import to_rgb
    from matplotlib.ticker import PercentFormatter

    matrix = np.asarray(matrix, dtype=float)
    rows, cols = matrix.shape
    mesh = ax.pcolormesh(
        np.ma.masked_invalid(matrix),
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        edgecolors="white",
        linewidth=0.3,
    )
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)  # first row at the top, as the matrix reads
    ax.set_aspect("equal")
    ax.grid(False)
    for side in ax.spines.values():
        side.set_visible(False)
    # Every label while the cells are tall enough for the 8 pt text, else every step-th one.
    box = ax.get_position()
    side_pt = 72 * min(box.width * ax.figure.get_figwidth(), box.height * ax.figure.get_figheight())
    step = max(1, math.ceil(9.0 * max(rows, cols) / max(side_pt, 1.0)))
    names = list(labels) if labels is not None else None
    ax.set_xticks(np.arange(0, cols, step) + 0.5, names[::step] if names is not None else [])
    ax.set_yticks(np.arange(0, rows, step) + 0.5, names[::step] if names is not None else [])
    ax.tick_params(axis="x", labelrotation=90, length=0)
    ax.tick_params(axis="y", labelrotation=0, length=0)
    if fmt is not None:
        for (i, j), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                red, green, blue = to_rgb(mesh.cmap(mesh.norm(value)))
                light = 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.408
                ax.text(
                    j + 0.5,
                    i + 0.5,
                    format(value, fmt),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="#222222" if light else "white",
                )
    if colorbar is not None:
        ax.figure.colorbar(
            mesh,
            ax=ax,
            label=colorbar,
            fraction=0.046,
            pad=0.03,
            format=PercentFormatter(1.0) if percent else None,
        )
    return mesh


def _confusion_heatmap(ax, matrix: np.ndarray, class_names, annotate: bool, cbar: bool = True):
    many = len(class_names) > 30
    mesh = heatmap(
        ax,
        matrix,
        None if many else class_names,
        cmap="Blues",
        vmin=0.0,
        vmax=1.0,
        fmt=".0%" if annotate and len(class_names) <= 20 else None,
        colorbar="share of the true class" if cbar else None,
        percent=True,
    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    return mesh


def _confusion_of(run: RunData, board: pd.DataFrame, key: str | None, what: str, path: Path):
    import matplotlib.pyplot as plt

    probs = _test_probs(run, key, what)
    matrix = scoring.confusion(probs, run.y_test, run.num_classes, normalize=True)
    size = min(10.5, max(5.0, 0.45 * run.num_classes + 2.0)) if run.num_classes <= 30 else 9.0
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    _confusion_heatmap(ax, matrix, run.class_names, annotate=True)
    accuracy = metrics.accuracy(probs, run.y_test)
    ax.set_title(
        f"{wrap_label(_names(board)[key], 60)}: test accuracy {accuracy:.1%}\n"
        "(each row: share of that true class)"
    )
    save_png(fig, path)


def confusion_best_member(run: RunData, board: pd.DataFrame, chosen: Picks, path: Path) -> None:
    _confusion_of(run, board, chosen.best_member, "member", path)


def confusion_best_ensemble(run: RunData, board: pd.DataFrame, chosen: Picks, path: Path) -> None:
    _confusion_of(run, board, chosen.best_ensemble, "ensemble", path)


def confusion_top_members(run: RunData, board: pd.DataFrame, chosen: Picks, path: Path) -> None:
    """Small multiples: the top members' normalised confusion matrices on one colour scale."""
    import matplotlib.pyplot as plt

    keys = [k for k in chosen.top_members if run.probs(run.entry(k), "test") is not None]
    if len(keys) < 2:
        raise Skip("fewer than two members have test predictions")
    from matplotlib.ticker import PercentFormatter

    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    width = 3.5 * cols + 0.9
    fig, axes = plt.subplots(rows, cols, figsize=(width, 3.7 * rows), squeeze=False)
    titles = distinct_labels([str(_names(board)[key]) for key in keys], width=30)
    for ax, key, title in zip(axes.ravel(), keys, titles, strict=False):
        probs = run.probs(run.entry(key), "test")
        matrix = scoring.confusion(probs, run.y_test, run.num_classes, normalize=True)
        mesh = _confusion_heatmap(ax, matrix, run.class_names, annotate=False, cbar=False)
        ax.set_title(f"{title}\n{metrics.accuracy(probs, run.y_test):.1%}", fontsize=9)
    for ax in axes.ravel()[len(keys) :]:
        ax.axis("off")
    # One colour bar for all (every matrix spans 0-100%), in a strip kept free at the right and
    # put beside the right-most matrix once the square matrices have their final places.
    fig.tight_layout(rect=(0.0, 0.0, 1.0 - 0.9 / width, 1.0))
    drawn = axes.ravel()[: len(keys)]
    for ax in drawn:
        ax.apply_aspect()
    boxes = [ax.get_position() for ax in drawn]
    right = max(b.x1 for b in boxes)
    low, high = min(b.y0 for b in boxes), max(b.y1 for b in boxes)
    strip = fig.add_axes(
        (right + 0.2 / width, low + 0.2 * (high - low), 0.15 / width, 0.6 * (high - low))
    )
    fig.colorbar(mesh, cax=strip, format=PercentFormatter(1.0), label="share of the true class")
    save_png(fig, path, layout=False)


def per_class_scores(run: RunData, board: pd.DataFrame, chosen: Picks, path: Path) -> None:
    """Precision, recall and F1 of every class for the best model, as grouped bars."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    probs = _test_probs(run, chosen.best, "model")
    scores = scoring.per_class_scores(probs, run.y_test, run.class_names)
    long = scores.melt(
        id_vars="class",
        value_vars=["precision", "recall", "f1"],
        var_name="score",
        value_name="value",
    )
    horizontal = run.num_classes > 12
    size = (8.0, max(4.0, 0.28 * run.num_classes)) if horizontal else (9.0, 4.0)
    fig, ax = plt.subplots(figsize=size)
    if horizontal:
        sns.barplot(long, y="class", x="value", hue="score", ax=ax, palette="colorblind")
        ax.set_xlim(0, 1)
        ax.set_xlabel("score on the test set")
        ax.set_ylabel("")
    else:
        sns.barplot(long, x="class", y="value", hue="score", ax=ax, palette="colorblind")
        ax.set_ylim(0, 1.15)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_ylabel("score on the test set")
        ax.set_xlabel("")
        ax.tick_params(axis="x", labelrotation=30)
    ax.legend(title=None, ncols=3, loc="upper right", frameon=True)
    ax.set_title(f"Per-class precision, recall and F1: {shorten(_names(board)[chosen.best], 60)}")
    save_png(fig, path)


_ACCURACY_KEYS = ("accuracy", "sparse_categorical_accuracy", "categorical_accuracy", "acc")


def training_curves(run: RunData, board: pd.DataFrame, chosen: Picks, path: Path) -> None:
    """Training and validation loss and accuracy per member (history.csv), best members first."""
    import matplotlib.pyplot as plt

    order = [k for k in board["id"] if k.startswith("members/")]
    histories = []
    for key in order:
        try:
            history = run.entry(key).history()
        except (OSError, ValueError) as exc:  # pandas' EmptyDataError / ParserError are ValueErrors
            log.warning("%s/history.csv cannot be read (%s); its curves are left out", key, exc)
            continue
        if len(history) and ("loss" in history or any(k in history for k in _ACCURACY_KEYS)):
            histories.append((key, history))
    if not histories:
        raise Skip("no member has a history.csv yet")
    shown = histories[:MAX_CURVES]
    per_row = 1 if len(shown) <= 4 else 2
    rows = math.ceil(len(shown) / per_row)
    panel = 4.4 if per_row == 1 else 3.0  # inches per axes: two panels a member, <= MAX_WIDTH_IN
    fig, axes = plt.subplots(
        rows, 2 * per_row, figsize=(panel * 2 * per_row, 2.4 * rows), squeeze=False
    )
    titles = distinct_labels(
        [str(_names(board)[key]) for key, _ in shown], width=50 if per_row == 1 else 34
    )
    for i, ((_, history), title) in enumerate(zip(shown, titles, strict=True)):
        ax_loss, ax_acc = (
            axes[i // per_row, 2 * (i % per_row)],
            axes[i // per_row, 2 * (i % per_row) + 1],
        )
        epochs = np.arange(1, len(history) + 1)
        if "epoch" in history:  # Keras's CSVLogger counts from 0, the runner from 1: show 1-based
            epochs = history["epoch"] + (1 if history["epoch"].min() == 0 else 0)
        acc_key = next((k for k in _ACCURACY_KEYS if k in history), None)
        for ax, key_train, label in ((ax_loss, "loss", "loss"), (ax_acc, acc_key, "accuracy")):
            if key_train is None or key_train not in history:
                ax.text(
                    0.5, 0.5, f"no {label} logged", ha="center", va="center", transform=ax.transAxes
                )
                continue
            ax.plot(epochs, history[key_train], color="#0173b2", label="train", marker=".")
            if f"val_{key_train}" in history:
                ax.plot(
                    epochs,
                    history[f"val_{key_train}"],
                    color="#d55e00",
                    label="validation",
                    linestyle="--",
                    marker=".",
                )
            ax.set_ylabel(label)
            epoch_axis(ax, epochs)
        ax_loss.set_title(title, loc="left")
        ax_acc.legend(loc="lower right")
    for ax in axes.ravel()[2 * len(shown) :]:
        ax.axis("off")
    if len(histories) > len(shown):
        fig.suptitle(f"top {len(shown)} of {len(histories)} members by validation accuracy")
    save_png(fig, path)


def epoch_axis(ax, epochs) -> None:
    """Whole epochs only on the x axis; one epoch gets a tick "1", not a 0.945-1.050 span."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    low, high = float(np.min(epochs)), float(np.max(epochs))
    if high - low < 1:
        ax.set_xlim(low - 0.5, high + 0.5)


def pareto_front(cost: np.ndarray, score: np.ndarray, lower_is_better: bool) -> np.ndarray:
    """Indices of the points no other point beats on both cost and score, cheapest first."""
    order = np.lexsort((-score, cost if lower_is_better else -cost))
    front, best = [], -np.inf
    for i in order:
        if score[i] > best:
            front.append(i)
            best = score[i]
    return np.asarray(front, dtype=int)


def accuracy_vs_cost(run: RunData, board: pd.DataFrame, chosen: Picks, path: Path) -> None:
    """Test accuracy against training time, inference speed and parameters, Pareto front marked."""
    import matplotlib.pyplot as plt

    panels = [
        ("train_seconds", "training time (log scale)", True, duration),
        (
            "images_per_second",
            "inference images / second (log scale)",
            False,
            lambda v: f"{v:,.0f}",
        ),
        ("params", "parameters (log scale)", True, count),
    ]
    scored = board[(board["status"] == "done") & board["test_accuracy"].notna()]
    usable = [p for p in panels if (pd.to_numeric(scored[p[0]], errors="coerce") > 0).sum() >= 1]
    if scored.empty or not usable:
        raise Skip("no finished entry has both a test accuracy and a recorded cost")
    panel = min(5.0, MAX_WIDTH_IN / len(usable))
    fig, axes = plt.subplots(1, len(usable), figsize=(panel * len(usable), 4.4), squeeze=False)
    for ax, (col, label, lower, fmt) in zip(axes[0], usable, strict=True):
        cost = pd.to_numeric(scored[col], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(cost) & (cost > 0)
        frame = scored[ok]
        cost, acc = cost[ok], frame["test_accuracy"].to_numpy(dtype=float)
        for kind in sorted(frame["kind"].unique()):
            mask = (frame["kind"] == kind).to_numpy()
            ax.scatter(
                cost[mask],
                acc[mask],
                s=36,
                alpha=0.85,
                label=kind,
                color=KIND_COLORS.get(str(kind), "#949494"),
                edgecolor="white",
                zorder=3,
            )
        front = pareto_front(cost, acc, lower)
        # The front runs from the best cost to the worst: steps-post draws the attainable staircase.
        ax.plot(
            cost[front],
            acc[front],
            color="#cc78bc",
            linewidth=1.5,
            drawstyle="steps-post",
            zorder=2,
            label="Pareto front",
        )
        ax.scatter(
            cost[front],
            acc[front],
            s=90,
            facecolor="none",
            edgecolor="#cc78bc",
            linewidth=1.5,
            zorder=4,
        )
        ax.set_xscale("log")
        ax.autoscale_view()
        low, high = np.log(ax.get_xlim())
        labels = distinct_labels([str(m) for m in frame["model"].iloc[front]])
        for i, text in zip(front, labels, strict=True):
            right = (np.log(cost[i]) - low) / max(high - low, 1e-12) > 0.6  # label to the left
            ax.annotate(
                text,
                (cost[i], acc[i]),
                fontsize=7,
                xytext=(-4 if right else 4, 4),
                textcoords="offset points",
                ha="right" if right else "left",
                linespacing=1.0,
            )
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy")
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _, f=fmt: f(v)))
        ax.xaxis.set_minor_formatter(plt.FuncFormatter(lambda v, _, f=fmt: _minor_label(v, f)))
        ax.legend(loc="best")
    fig.suptitle(
        "Accuracy against cost (better: higher, and cheaper: left for time and "
        "parameters, right for speed)",
        fontsize=10,
    )
    save_png(fig, path)


def _minor_label(value: float, fmt: Callable[[float], str]) -> str:
    """Label the 2x and 5x minor ticks of a log axis; the others stay blank."""
    if value <= 0:
        return ""
    lead = round(value / 10 ** math.floor(math.log10(value)), 6)
    return fmt(value) if lead in (2.0, 5.0) else ""


def reliability(run: RunData, board: pd.DataFrame, chosen: Picks, path: Path) -> None:
    """Reliability diagram of the best model: accuracy per confidence bin against the diagonal."""
    import matplotlib.pyplot as plt

    probs = _test_probs(run, chosen.best, "model")
    table = scoring.calibration_bins(probs, run.y_test)
    ece = scoring.expected_calibration_error(probs, run.y_test)
    entry = run.entry(chosen.best)
    calibration = run.calibration(entry)
    before = None if calibration is None else run.probs(entry, "test", calibrated=False)
    fig, (ax, ax_count) = plt.subplots(
        2, 1, figsize=(5.5, 6.0), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    width = table["high"] - table["low"]
    filled = table["count"] > 0
    ax.bar(
        table["low"][filled],
        table["accuracy"][filled],
        width=width[filled],
        align="edge",
        color="#0173b2",
        edgecolor="white",
        label="accuracy",
    )
    gap = (table["confidence"] - table["accuracy"])[filled]
    ax.bar(
        table["low"][filled],
        gap.abs(),
        bottom=np.minimum(table["accuracy"], table["confidence"])[filled],
        width=width[filled],
        align="edge",
        facecolor="none",
        edgecolor="#d55e00",
        hatch="///",
        linewidth=1.0,
        label="gap to mean confidence",
    )
    ax.plot(
        [0, 1], [0, 1], color="#555555", linestyle="--", linewidth=1, label="perfect calibration"
    )
    scores = f"ECE {ece:.3f}"
    if before is not None:  # the same model before temperature scaling, bin by bin
        raw = scoring.calibration_bins(before, run.y_test)
        filled_raw = raw["count"] > 0
        centers = ((raw["low"] + raw["high"]) / 2)[filled_raw]
        ax.plot(
            centers,
            raw["accuracy"][filled_raw],
            color="#029e73",
            marker="o",
            markersize=4,
            linewidth=1,
            label="accuracy before calibration",
        )
        raw_ece = scoring.expected_calibration_error(before, run.y_test)
        scores = f"ECE {raw_ece:.3f} \u2192 {ece:.3f}, T = {float(calibration['temperature']):.2f}"
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy in bin")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"Reliability: {wrap_label(_names(board)[chosen.best], 40)} ({scores})")
    ax_count.bar(
        table["low"],
        table["count"] / max(1, table["count"].sum()),
        width=width,
        align="edge",
        color="#949494",
        edgecolor="white",
    )
    ax_count.set_ylabel("share of images")
    ax_count.set_xlabel("confidence (top-class probability)")
    save_png(fig, path)


def confident_mistakes(run: RunData, board: pd.DataFrame, chosen: Picks, path: Path) -> None:
    """The best model's most confident mistakes on test images, with true and predicted labels."""
    import matplotlib.pyplot as plt

    probs = _test_probs(run, chosen.best, "model")
    try:
        images = np.load(run.store.data_dir / "x_test.npy", mmap_mode="r")
    except FileNotFoundError as exc:
        raise Skip("data/x_test.npy is missing") from exc
    if len(images) != len(run.y_test) or images.ndim != 4:
        raise Skip(f"data/x_test.npy holds {images.shape}, not {len(run.y_test)} test images")
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != run.y_test)
    if not len(wrong):
        raise Skip("the best model makes no mistakes on the test set")
    confidence = probs[wrong, predicted[wrong]]
    chosen_rows = wrong[np.argsort(-confidence, kind="stable")][:MISTAKES]
    cols = 4
    rows = math.ceil(len(chosen_rows) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.1, rows * 2.6), squeeze=False)
    names = run.class_names
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), chosen_rows, strict=False):
        ax.imshow(np.asarray(images[i]), interpolation="nearest")
        ax.set_title(
            f"true: {names[run.y_test[i]]}\npred: {names[predicted[i]]} "
            f"({probs[i, predicted[i]]:.0%})",
            fontsize=8,
            color="#a00000",
        )
    fig.suptitle(f"Most confident mistakes: {shorten(_names(board)[chosen.best], 60)}", fontsize=10)
    save_png(fig, path, photos=True)


def diversity(run: RunData, board: pd.DataFrame, chosen: Picks, path: Path) -> None:
    """How often each pair of members disagrees (ensembles/diversity.json)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    try:
        names, matrix = run.store.diversity()
    except ZoobenchError as exc:
        raise Skip(str(exc)) from exc
    if len(names) < 2:
        raise Skip(f"ensembles/diversity.json has {len(names)} member(s): nothing to compare")
    size = min(9.0, max(4.5, 0.45 * len(names) + 2.5))
    labels = distinct_labels(names)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    matrix = np.asarray(matrix, dtype=float)
    heatmap(
        ax,
        matrix,
        labels,
        cmap=sns.color_palette("mako_r", as_cmap=True),
        vmin=0.0,
        vmax=max(float(np.nanmax(matrix)), 1e-9),
        fmt=".2f" if len(names) <= 12 else None,
        colorbar="share of images the two disagree on",
    )
    ax.set_title("Member diversity: pairwise disagreement")
    save_png(fig, path)


Draw = Callable[[RunData, pd.DataFrame, Picks, Path], None]
_FIGURES: list[tuple[str, str, str, Draw]] = [
    (
        "samples",
        "Sample images",
        "Pictures from the run's data with their class names.",
        sample_grid,
    ),
    (
        "confusion_best_member",
        "Confusion matrix: best single member",
        "Normalised per true class (each row sums to 100%).",
        confusion_best_member,
    ),
    (
        "confusion_best_ensemble",
        "Confusion matrix: best ensemble",
        "Normalised per true class (each row sums to 100%).",
        confusion_best_ensemble,
    ),
    (
        "confusion_top_members",
        "Confusion matrices of the top members",
        "Same colour scale; members in leaderboard order.",
        confusion_top_members,
    ),
    (
        "per_class",
        "Per-class scores of the best model",
        "Precision, recall (= per-class accuracy) and F1 on the test set.",
        per_class_scores,
    ),
    (
        "curves",
        "Training curves",
        "Loss and accuracy per epoch, training (solid) and validation "
        "(dashed), members in leaderboard order.",
        training_curves,
    ),
    (
        "cost",
        "Accuracy against cost",
        "Each point is a leaderboard row; the Pareto front joins "
        "the rows no other row beats on both accuracy and that cost.",
        accuracy_vs_cost,
    ),
    (
        "reliability",
        "Reliability diagram of the best model",
        "Accuracy against confidence in 15 equal-width bins; the gap is the calibration error. "
        "Bars: after temperature scaling (fit on validation), when the model has one; the "
        "line: before.",
        reliability,
    ),
    (
        "mistakes",
        "Most confident mistakes of the best model",
        "Test pictures the best model got wrong with the highest confidence.",
        confident_mistakes,
    ),
    (
        "diversity",
        "Ensemble member diversity",
        "Share of images on which each pair of members predicts different classes.",
        diversity,
    ),
]
