"""Multi-class AdaBoost (SAMME, Zhu et al. 2009) over members: the weight arithmetic, pure NumPy.

A member with ``boosting = N`` trains N rounds in the group ``"boosting:<name>"``. Round k learns
from the training split with per-sample weights that emphasise what rounds 0..k-1 got wrong:

    err_m   = sum_i w_i [h_m(x_i) != y_i] / sum_i w_i
    alpha_m = log((1 - err_m) / err_m) + log(K - 1)
    w_i    <- w_i * exp(alpha_m [h_m(x_i) != y_i]), normalised

Every quantity comes from the rounds' predictions on the TRAINING split (stored with each round):
the validation split only early-stops each round and ranks the finished ensemble, and the test
split never enters. A round no better than chance (err >= (K - 1) / K) gets no weight and ends
the boosting, as in SAMME; a round with no weighted error ends it too (nothing is left to
emphasise), its error floored at ``ERROR_FLOOR`` so its alpha is large but finite.

Round k's weights are a pure function of rounds 0..k-1's stored training predictions
(:func:`replay`), so a resumed run recomputes exactly the weights the first one trained with.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ERROR_FLOOR = 1e-6  # a perfect round's error, for a finite alpha
SAMPLE_WEIGHT, RESAMPLING = "sample_weight", "resampling"  # how a round takes its weights


def _check(weights: Any, wrong: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    w = np.asarray(weights, dtype=np.float64)
    bad = np.asarray(wrong)
    if w.ndim != 1 or not len(w):
        raise ValueError(f"weights must be a non-empty 1-D array, got shape {w.shape}")
    if bad.shape != w.shape:
        raise ValueError(f"wrong has shape {bad.shape}, weights {w.shape}: one flag a sample")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be a whole number >= 2, got {num_classes!r}")
    return w / w.sum(), bad.astype(bool)


def chance_error(num_classes: int) -> float:
    """(K - 1) / K: the weighted error of guessing, at or above which a round gets no say."""
    return (num_classes - 1) / num_classes


def samme_update(weights: Any, wrong: Any, num_classes: int) -> tuple[np.ndarray, float, float]:
    """One SAMME round: (the next weights, summing to 1; the round's alpha; its weighted error).

    ``wrong[i]`` says whether the round misclassified training sample i. A round whose error is
    at least chance (:func:`chance_error`) is discarded as in SAMME: alpha 0 (scikit-learn's
    ``estimator_weights_`` too), the weights left as they were; the caller stops boosting there.
    """
    w, bad = _check(weights, wrong, num_classes)
    error = float(w[bad].sum())
    if error >= chance_error(num_classes):
        return w, 0.0, error
    clipped = max(error, ERROR_FLOOR)
    alpha = math.log((1.0 - clipped) / clipped) + math.log(num_classes - 1)
    new = w * np.exp(alpha * bad)
    return new / new.sum(), alpha, error


def stop_reason(error: float, num_classes: int, round_index: int) -> str:
    """Why boosting ends after a round with weighted training ``error`` ("" when it goes on)."""
    if error >= chance_error(num_classes):
        return (
            f"round {round_index}'s weighted training error {error:.4f} is no better than "
            f"chance ({chance_error(num_classes):.4f} = (K-1)/K): boosting stops (SAMME)"
        )
    if error <= 0.0:
        return (
            f"round {round_index} classifies every training image right: nothing is left "
            "to emphasise, boosting stops"
        )
    return ""


@dataclass
class Boost:
    """Where a boosting group stands after its finished rounds: the next round's weights."""

    weights: np.ndarray  # sums to 1, one a training image
    alphas: list[float] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)
    stopped: str = ""  # why no further round is trained ("" while boosting goes on)

    @property
    def rounds(self) -> int:
        return len(self.alphas)


def replay(predicted: Sequence[np.ndarray], y_train: np.ndarray, num_classes: int) -> Boost:
    """SAMME over the finished rounds' predicted training labels, from uniform weights.

    A pure function of what the store holds: a resumed run gets the same weights (and hash).
    """
    y = np.asarray(y_train).ravel()
    state = Boost(np.full(len(y), 1.0 / len(y)))
    for k, labels in enumerate(predicted):
        labels = np.asarray(labels).ravel()
        if labels.shape != y.shape:
            raise ValueError(
                f"round {k} predicted {labels.shape[0]} training labels for {len(y)} images"
            )
        if state.stopped:
            raise ValueError(f"round {k} follows a round that stopped the boosting")
        state.weights, alpha, error = samme_update(state.weights, labels != y, num_classes)
        state.alphas.append(alpha)
        state.errors.append(error)
        state.stopped = stop_reason(error, num_classes, k)
    return state


def weights_hash(weights: np.ndarray) -> str:
    """A short, stable hash of a round's weights (recorded in its config and part of its ID)."""
    w = np.asarray(weights, dtype=np.float64)
    scaled = np.round(w * (len(w) / w.sum()), 10).astype("<f8")  # mean 1, 10 decimals
    return hashlib.sha256(scaled.tobytes()).hexdigest()[:16]


def as_sample_weight(weights: np.ndarray) -> np.ndarray:
    """Keras ``sample_weight``: the weights scaled to mean 1, so the learning rate means the same."""
    w = np.asarray(weights, dtype=np.float64)
    return (w * (len(w) / w.sum())).astype(np.float32)


def resample(weights: np.ndarray, seed: Any) -> np.ndarray:
    """Row indices drawn with replacement in proportion to ``weights`` (``len(weights)`` of them):
    how a round takes its weights where a step cannot take per-sample weights. Uniform weights
    (round 0) take every row once, like a plain member."""
    w = np.asarray(weights, dtype=np.float64)
    if np.allclose(w, w[0]):
        return np.arange(len(w))
    return np.random.default_rng(seed).choice(len(w), size=len(w), replace=True, p=w / w.sum())


def weighting(strategy: str | None, augment: Sequence[dict[str, Any]]) -> str:
    """How a member takes the round's weights: Keras ``sample_weight``, or weighted resampling for
    a transfer strategy (its training takes no weights) or a policy that mixes labels (mixup,
    cutmix: a mixed image has no one weight)."""
    from benchmark.data.augment import mixes_labels

    if strategy is not None or mixes_labels(augment):
        return RESAMPLING
    return SAMPLE_WEIGHT


def link(entry) -> list[str]:
    """What a later round records of a finished one: its ID and its training predictions' hash."""
    return [entry.id, entry.train_probs_sha256 or ""]


def chain(entries: Sequence) -> list:
    """A boosting group's rounds that the ensemble combines, in round order.

    Round 0, then the round whose recorded ``previous`` links are exactly the chain so far (a
    round retrained since, or left over from other settings, does not link), while each round has
    alpha > 0; it ends after a round that stopped the boosting. On two candidates the later one.
    """
    out: list = []
    while True:
        want = [link(e) for e in out]
        candidates = [
            e
            for e in entries
            if (e.config.get("boosting") or {}).get("round") == len(out)
            and (e.config.get("boosting") or {}).get("previous") == want
        ]
        if not candidates:
            return out
        entry = candidates[-1]
        stats = entry.metrics.get("boosting") or {}
        if not stats.get("alpha", 0) > 0:
            return out
        out.append(entry)
        if stats.get("stop"):
            return out
