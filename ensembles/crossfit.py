"""Cross-fitting on the validation split: an honest validation score for anything fit on it.

Whatever learns from validation predictions (greedy weights, a top-k choice, a stacker, a
temperature) scores itself optimistically on the same rows. Cross-fitting splits validation into K
stratified, seeded folds and predicts each fold with a copy fitted on the other K - 1, so every
row's figure comes from a fit that never saw it (scikit-learn's ``cross_val_predict`` idea). The
final object is then refit on all of validation; only its test predictions use that refit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Split = tuple[np.ndarray, np.ndarray]  # (rows to fit on, rows to predict)


def validation_folds(y: Any, folds: int, seed: int) -> list[Split]:
    """``folds`` stratified, shuffled (seeded) folds of the rows of ``y``, capped by the rarest class.

    A fold needs at least one row of every class present, so K is at most the size of the rarest
    class; below 2 no out-of-fold score exists and this raises ValueError saying why (the caller
    skips what needed it rather than report an in-sample figure).
    """
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y)
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
    if y.ndim != 1 or not len(y):
        raise ValueError(f"y must be a non-empty 1-D array of labels, got shape {y.shape}")
    present = np.unique(y)
    if len(present) < 2:
        raise ValueError(f"out-of-fold scores need at least 2 classes in y, got {present.tolist()}")
    smallest = int(min(np.sum(y == c) for c in present))
    k = min(int(folds), smallest)
    if k < 2:
        raise ValueError(
            "out-of-fold scores need at least 2 validation rows of every class present; "
            f"the smallest class has {smallest}"
        )
    splitter = StratifiedKFold(k, shuffle=True, random_state=int(seed))
    return [(train, test) for train, test in splitter.split(np.zeros(len(y)), y)]


def cross_fit(
    fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
    splits: list[Split],
    n: int,
    width: int,
) -> np.ndarray:
    """(n, width) out-of-fold predictions: row block ``test`` of each split is
    ``fit_predict(train, test)``, a fit on ``train`` only. Every row must be predicted once."""
    out = np.full((n, width), np.nan)
    seen = np.zeros(n, dtype=int)
    for train, test in splits:
        if np.intersect1d(train, test).size:
            raise ValueError("a split fits and predicts the same rows: not out-of-fold")
        out[test] = fit_predict(train, test)
        seen[test] += 1
    if not np.all(seen == 1):
        raise ValueError("the splits must predict every row exactly once")
    return out


def out_of_fold(
    make: Callable[[], Any], probs_list: list[np.ndarray], y: np.ndarray, splits: list[Split]
) -> np.ndarray:
    """Out-of-fold probabilities of an ensemble method (``fit(probs_list, y)`` /
    ``predict_proba(probs_list)``), a fresh one from ``make()`` per fold."""

    def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        est = make().fit([p[train] for p in probs_list], y[train])
        return est.predict_proba([p[test] for p in probs_list])

    return cross_fit(fit_predict, splits, len(y), probs_list[0].shape[1])
