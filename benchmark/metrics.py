"""Scores of class probabilities against integer labels: the one accuracy and the one log loss.

Members (``training.evaluate_probs``), ensembles (``ensembles.methods``) and reports
(``reports.scoring``) all score through these two functions, so a stored ``val_accuracy`` or
``val_loss`` means the same thing wherever it was computed. NumPy only: importing this module
never imports Keras.

Agreed behaviour:

* empty input (no labels) scores ``nan`` for both: there is nothing to measure, and a 0.0 would
  read as "always wrong" (or, for the loss, "perfect");
* the log loss is the mean negative log of the label's probability, clipped to ``[EPS, 1]`` so one
  confident mistake costs at most ``-log(EPS)`` (about 16.1) instead of infinity. Rows are not
  renormalised. It is computed in float64 whatever the input's precision, so a member (float32
  predictions) and a one-member ensemble of it (float64 combination) get the same loss and the
  ranking's tie-break on ``val_loss`` does not depend on rounding noise. For probabilities of
  at least ``EPS`` whose rows sum to 1 it equals ``sklearn.metrics.log_loss`` (which clips at
  the dtype's machine epsilon instead).
"""

from __future__ import annotations

from typing import Any

import numpy as np

EPS = 1e-7  # the clip of the log loss (Keras' backend epsilon)


def _labels(labels: Any, n: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(
            f"labels must be a 1-D array of {n} class indices, got shape {labels.shape}"
        )
    return labels


def accuracy(probs_or_pred: Any, labels: Any) -> float:
    """Share of rows whose predicted class is the label; ``nan`` when there are no rows.

    ``probs_or_pred`` is an (N, C) probability (or score) matrix, whose row-wise argmax is the
    prediction, or an (N,) vector of predicted classes.
    """
    pred = np.asarray(probs_or_pred)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    elif pred.ndim != 1:
        raise ValueError(f"accuracy needs (N, C) probabilities or (N,) classes, got {pred.shape}")
    labels = _labels(labels, len(pred))
    return float(np.mean(pred == labels)) if len(labels) else float("nan")


def log_loss(probs: Any, labels: Any) -> float:
    """Mean ``-log p[label]`` with ``p`` clipped to ``[EPS, 1]``; ``nan`` when there are no rows."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"log_loss needs (N, C) probabilities, got shape {probs.shape}")
    labels = _labels(labels, len(probs))
    if not len(labels):
        return float("nan")
    picked = np.clip(probs[np.arange(len(labels)), labels], EPS, 1.0)
    return float(-np.mean(np.log(picked)))


def wilson_interval(share: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``share`` observed on ``n`` trials.

    Unlike the normal approximation it stays inside [0, 1] and keeps a width at 0% and 100%, which
    a robustness cell near either end needs. ``nan`` bounds when there is nothing to measure. A
    mean over several corruptions of the same ``n`` images, given ``n`` here, gets a conservative
    interval: each image's share of right answers lies in [0, 1], so the mean's variance is at most
    that of one proportion on ``n`` images.
    """
    from statistics import NormalDist

    if not n or share is None or not np.isfinite(share):
        return float("nan"), float("nan")
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    denominator = 1.0 + z * z / n
    centre = (share + z * z / (2 * n)) / denominator
    half = z / denominator * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def wilson_half_width(n: int, level: float = 0.95) -> float:
    """The widest half-width :func:`wilson_interval` can have on ``n`` trials (at 50%)."""
    low, high = wilson_interval(0.5, n, level)
    return (high - low) / 2.0
