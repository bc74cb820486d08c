"""Scores computed from stored probabilities: accuracy with a bootstrap interval, calibration.

Everything here is a pure function of ``(probs, labels)`` arrays, so the leaderboard, the figures
and the tests share one definition of each number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

ECE_BINS = 15


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval."""

    estimate: float
    low: float
    high: float


def bootstrap_accuracy(
    correct: np.ndarray, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> Interval:
    """Percentile bootstrap interval of the mean of a 0/1 ``correct`` vector.

    Resampling n rows with replacement and counting the correct ones draws exactly from
    Binomial(n, observed accuracy), so the ``resamples`` bootstrap replicates are drawn that way in
    one vectorised call instead of materialising a (resamples, n) index matrix. Seeded: the same
    store gives the same interval.
    """
    correct = np.asarray(correct, dtype=bool)
    n = len(correct)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    estimate = float(correct.mean())
    rng = np.random.default_rng(seed)
    replicates = rng.binomial(n, estimate, size=resamples) / n
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(replicates, [alpha, 1.0 - alpha])
    return Interval(estimate, float(min(low, estimate)), float(max(high, estimate)))


def calibration_bins(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> pd.DataFrame:
    """Equal-width confidence bins (lo, hi]: count, mean confidence and accuracy of each bin.

    Confidence is the top-class probability; a row is correct when that class is the label.
    Empty bins have count 0 and NaN confidence / accuracy.
    """
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges[1:-1], confidence, side="left"), 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=confidence, minlength=bins) / count
        mean_acc = np.bincount(index, weights=correct, minlength=bins) / count
    return pd.DataFrame(
        {
            "low": edges[:-1],
            "high": edges[1:],
            "count": count,
            "confidence": mean_conf,
            "accuracy": mean_acc,
        }
    )


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE: the count-weighted mean gap |accuracy - confidence| over equal-width confidence bins."""
    table = calibration_bins(probs, labels, bins)
    filled = table[table["count"] > 0]
    if filled.empty:
        return float("nan")
    gaps = (filled["accuracy"] - filled["confidence"]).abs()
    return float((filled["count"] * gaps).sum() / filled["count"].sum())


def confusion(
    probs: np.ndarray, labels: np.ndarray, num_classes: int, normalize: bool
) -> np.ndarray:
    """Confusion matrix (rows = true class); ``normalize`` divides each row by its class's size."""
    from sklearn.metrics import confusion_matrix

    predicted = np.asarray(probs).argmax(axis=1)
    return confusion_matrix(
        labels, predicted, labels=np.arange(num_classes), normalize="true" if normalize else None
    )


def per_class_scores(probs: np.ndarray, labels: np.ndarray, class_names) -> pd.DataFrame:
    """Precision, recall and F1 of every class (recall is the per-class accuracy), with support."""
    from sklearn.metrics import precision_recall_fscore_support

    predicted = np.asarray(probs).argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=np.arange(len(class_names)), zero_division=0
    )
    return pd.DataFrame(
        {
            "class": list(class_names),
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
        }
    )
