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

DPI = 110
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

    return Picks(first(scored), first(members), first(ensembles),
                 list(members["id"].head(TOP_MULTIPLES)))  # fmt: skip


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

    rc = {"figure.dpi": DPI, "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8,
          "ytick.labelsize": 8, "legend.fontsize": 8, "axes.titleweight": "bold"}  # fmt: skip
    with sns.axes_style("whitegrid"), plt.rc_context(rc):
        try:
            yield
        finally:
            plt.close("all")


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


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
        images, labels, run.class_names, path, title=(run.meta.get("data") or {}).get("source")
    )


def _confusion_heatmap(ax, matrix: np.ndarray, class_names, annotate: bool, cbar: bool = True):
    import seaborn as sns

    many = len(class_names) > 30
    sns.heatmap(
        matrix, ax=ax, vmin=0.0, vmax=1.0, cmap="Blues", square=True, cbar=cbar,
        annot=annotate and len(class_names) <= 20, fmt=".0%", annot_kws={"fontsize": 7},
        xticklabels=False if many else list(class_names),
        yticklabels=False if many else list(class_names), linewidths=0.3, linecolor="white",
    )  # fmt: skip
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.tick_params(axis="x", labelrotation=90)
    ax.tick_params(axis="y", labelrotation=0)


def _confusion_of(run: RunData, board: pd.DataFrame, key: str | None, what: str, path: Path):
    import matplotlib.pyplot as plt

    probs = _test_probs(run, key, what)
    matrix = scoring.confusion(probs, run.y_test, run.num_classes, normalize=True)
    size = max(5.0, 0.45 * run.num_classes + 2.0) if run.num_classes <= 30 else 9.0
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    _confusion_heatmap(ax, matrix, run.class_names, annotate=True)
    accuracy = metrics.accuracy(probs, run.y_test)
    ax.set_title(f"{_short(_names(board)[key], 48)}: test accuracy {accuracy:.1%}\n"
                 "(each row: share of that true class)")  # fmt: skip
    _save(fig, path)


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
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.5 * rows), squeeze=False)
    names = _names(board)
    for ax, key in zip(axes.ravel(), keys, strict=False):
        probs = run.probs(run.entry(key), "test")
        matrix = scoring.confusion(probs, run.y_test, run.num_classes, normalize=True)
        _confusion_heatmap(ax, matrix, run.class_names, annotate=False, cbar=False)
        ax.set_title(f"{_short(names[key])}\n{metrics.accuracy(probs, run.y_test):.1%}", fontsize=9)
    for ax in axes.ravel()[len(keys) :]:
        ax.axis("off")
    _save(fig, path)


def per_class_scores(run: RunData, board: pd.DataFrame, chosen: Picks, path: Path) -> None:
    """Precision, recall and F1 of every class for the best model, as grouped bars."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    probs = _test_probs(run, chosen.best, "model")
    scores = scoring.per_class_scores(probs, run.y_test, run.class_names)
    long = scores.melt(id_vars="class", value_vars=["precision", "recall", "f1"],
                       var_name="score", value_name="value")  # fmt: skip
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
    ax.set_title(f"Per-class precision, recall and F1: {_short(_names(board)[chosen.best], 48)}")
    _save(fig, path)


_ACCURACY_KEYS = ("accuracy", "sparse_categorical_accuracy", "categorical_accuracy", "acc")


def training_curves(run: RunData, board: pd.DataFrame, chosen: Picks, path: Path) -> None:
    """Training and validation loss and accuracy per member (history.csv), best members first."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

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
    fig, axes = plt.subplots(rows, 2 * per_row, figsize=(5.0 * per_row * 2 / 1.3, 2.3 * rows),
                             squeeze=False)  # fmt: skip
    names = _names(board)
    for i, (key, history) in enumerate(shown):
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
                ax.plot(epochs, history[f"val_{key_train}"], color="#d55e00", label="validation",
                        linestyle="--", marker=".")  # fmt: skip
            ax.set_ylabel(label)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_loss.set_title(_short(names[key], 40), loc="left")
        ax_acc.legend(loc="lower right")
    for ax in axes.ravel()[2 * len(shown) :]:
        ax.axis("off")
    if len(histories) > len(shown):
        fig.suptitle(f"top {len(shown)} of {len(histories)} members by validation accuracy")
    _save(fig, path)


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

    panels = [("train_seconds", "training time (log scale)", True, duration),
              ("images_per_second", "inference images / second (log scale)", False,
               lambda v: f"{v:,.0f}"),
              ("params", "parameters (log scale)", True, count)]  # fmt: skip
    scored = board[(board["status"] == "done") & board["test_accuracy"].notna()]
    usable = [p for p in panels if (pd.to_numeric(scored[p[0]], errors="coerce") > 0).sum() >= 1]
    if scored.empty or not usable:
        raise Skip("no finished entry has both a test accuracy and a recorded cost")
    fig, axes = plt.subplots(1, len(usable), figsize=(5.0 * len(usable), 4.2), squeeze=False)
    for ax, (col, label, lower, fmt) in zip(axes[0], usable, strict=True):
        cost = pd.to_numeric(scored[col], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(cost) & (cost > 0)
        frame = scored[ok]
        cost, acc = cost[ok], frame["test_accuracy"].to_numpy(dtype=float)
        for kind in sorted(frame["kind"].unique()):
            mask = (frame["kind"] == kind).to_numpy()
            ax.scatter(cost[mask], acc[mask], s=36, alpha=0.85, label=kind,
                       color=KIND_COLORS.get(str(kind), "#949494"), edgecolor="white", zorder=3)  # fmt: skip
        front = pareto_front(cost, acc, lower)
        # The front runs from the best cost to the worst: steps-post draws the attainable staircase.
        ax.plot(cost[front], acc[front], color="#cc78bc", linewidth=1.5, drawstyle="steps-post",
                zorder=2, label="Pareto front")  # fmt: skip
        ax.scatter(cost[front], acc[front], s=90, facecolor="none", edgecolor="#cc78bc",
                   linewidth=1.5, zorder=4)  # fmt: skip
        for i in front:
            ax.annotate(_short(str(frame["model"].iloc[i]), 22), (cost[i], acc[i]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy")
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _, f=fmt: f(v)))
        ax.xaxis.set_minor_formatter(plt.FuncFormatter(lambda v, _, f=fmt: _minor_label(v, f)))
        ax.legend(loc="best")
    fig.suptitle("Accuracy against cost (better: higher, and cheaper: left for time and parameters, "
                 "right for speed)", fontsize=10)  # fmt: skip
    _save(fig, path)


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
    fig, (ax, ax_count) = plt.subplots(2, 1, figsize=(5.5, 6.0), sharex=True,
                                       gridspec_kw={"height_ratios": [3, 1]})  # fmt: skip
    width = table["high"] - table["low"]
    filled = table["count"] > 0
    ax.bar(table["low"][filled], table["accuracy"][filled], width=width[filled], align="edge",
           color="#0173b2", edgecolor="white", label="accuracy")  # fmt: skip
    gap = (table["confidence"] - table["accuracy"])[filled]
    ax.bar(table["low"][filled], gap.abs(), bottom=np.minimum(table["accuracy"], table["confidence"])
           [filled], width=width[filled], align="edge", facecolor="none", edgecolor="#d55e00",
           hatch="///", linewidth=1.0, label="gap to mean confidence")  # fmt: skip
    ax.plot(
        [0, 1], [0, 1], color="#555555", linestyle="--", linewidth=1, label="perfect calibration"
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy in bin")
    ax.legend(loc="upper left")
    ax.set_title(f"Reliability: {_short(_names(board)[chosen.best], 40)} (ECE {ece:.3f})")
    ax_count.bar(table["low"], table["count"] / max(1, table["count"].sum()), width=width,
                 align="edge", color="#949494", edgecolor="white")  # fmt: skip
    ax_count.set_ylabel("share of images")
    ax_count.set_xlabel("confidence (top-class probability)")
    _save(fig, path)


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
        ax.set_title(f"true: {names[run.y_test[i]]}\npred: {names[predicted[i]]} "
                     f"({probs[i, predicted[i]]:.0%})", fontsize=8, color="#a00000")  # fmt: skip
    fig.suptitle(f"Most confident mistakes: {_short(_names(board)[chosen.best], 48)}", fontsize=10)
    _save(fig, path)


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
    size = min(11.0, max(4.5, 0.45 * len(names) + 2.5))
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    sns.heatmap(matrix, ax=ax, cmap="mako_r", vmin=0.0, square=True, annot=len(names) <= 12,
                fmt=".2f", annot_kws={"fontsize": 7}, xticklabels=[_short(n, 20) for n in names],
                yticklabels=[_short(n, 20) for n in names], linewidths=0.3, linecolor="white",
                cbar_kws={"label": "share of images the two disagree on"})  # fmt: skip
    ax.tick_params(axis="x", labelrotation=90)
    ax.tick_params(axis="y", labelrotation=0)
    ax.set_title("Member diversity: pairwise disagreement")
    _save(fig, path)


Draw = Callable[[RunData, pd.DataFrame, Picks, Path], None]
_FIGURES: list[tuple[str, str, str, Draw]] = [
    ("samples", "Sample images", "Pictures from the run's data with their class names.",
     sample_grid),
    ("confusion_best_member", "Confusion matrix: best single member",
     "Normalised per true class (each row sums to 100%).", confusion_best_member),
    ("confusion_best_ensemble", "Confusion matrix: best ensemble",
     "Normalised per true class (each row sums to 100%).", confusion_best_ensemble),
    ("confusion_top_members", "Confusion matrices of the top members",
     "Same colour scale; members in leaderboard order.", confusion_top_members),
    ("per_class", "Per-class scores of the best model",
     "Precision, recall (= per-class accuracy) and F1 on the test set.", per_class_scores),
    ("curves", "Training curves", "Loss and accuracy per epoch, training (solid) and validation "
     "(dashed), members in leaderboard order.", training_curves),
    ("cost", "Accuracy against cost", "Each point is a leaderboard row; the Pareto front joins "
     "the rows no other row beats on both accuracy and that cost.", accuracy_vs_cost),
    ("reliability", "Reliability diagram of the best model",
     "Accuracy against confidence in 15 equal-width bins; the gap is the calibration error.",
     reliability),
    ("mistakes", "Most confident mistakes of the best model",
     "Test pictures the best model got wrong with the highest confidence.", confident_mistakes),
    ("diversity", "Ensemble member diversity",
     "Share of images on which each pair of members predicts different classes.",
     diversity),
]  # fmt: skip
