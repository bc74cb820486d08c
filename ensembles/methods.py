"""Ensemble methods fit on validation probabilities only: averaging, greedy selection, stacking.

Every method is a small scikit-learn-style estimator over *lists of probability matrices* (one
(N, C) matrix per member, rows aligned): ``fit(val_probs_list, y_val)`` learns from validation
predictions, ``predict_proba(probs_list)`` combines any later predictions (test, new images).
Learned state lives in trailing-underscore attributes (``weights_``, ``classes_``, ``coef_``) so it
can be inspected and stored as JSON / npz, never pickled.

Averaging-type methods (all, top-k, greedy, group averages, boosting's alphas) reduce to one weight
vector over the members; the stacker is a multinomial logistic regression (or a one-hidden-layer
MLP) over the concatenated member probabilities. Whatever is fit on validation is scored on it
out-of-fold (:mod:`ensembles.crossfit`), so its validation score is honest.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmark.config.schema import ENSEMBLE_STACKERS
from benchmark.metrics import accuracy, log_loss

log = logging.getLogger(__name__)


# ---- validation helpers --------------------------------------------------------------------------
def check_probs_list(
    probs_list: Sequence[np.ndarray], name: str = "probs_list"
) -> list[np.ndarray]:
    """Float64 copies of the member matrices, all (N, C) with the same N and C, or a ValueError."""
    if isinstance(probs_list, np.ndarray) and probs_list.ndim == 2:
        probs_list = [probs_list]
    mats = [np.asarray(p, dtype=np.float64) for p in probs_list]
    if not mats:
        raise ValueError(f"{name} must hold at least one member's probabilities, got none")
    shape = mats[0].shape
    for i, m in enumerate(mats):
        if m.ndim != 2:
            raise ValueError(
                f"{name}[{i}] must be a 2-D (samples, classes) array, got shape {m.shape}"
            )
        if m.shape != shape:
            raise ValueError(f"{name}[{i}] has shape {m.shape}, expected {shape} like {name}[0]")
        if not np.all(np.isfinite(m)):
            raise ValueError(f"{name}[{i}] contains NaN or infinite values")
    return mats


def check_labels(y: Any, n: int, num_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"y must be a 1-D array of {n} labels, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"y must lie in [0, {num_classes}), got labels {y.min()}..{y.max()}")
    return y.astype(np.int64)


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _score_key(probs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Sort key, larger is better: accuracy first, ties broken by the lower log loss."""
    return accuracy(probs, y), -log_loss(probs, y)


# ---- weighted averages ---------------------------------------------------------------------------
class WeightedAverage:
    """Fixed-weight soft voting; the common ``predict_proba`` of every averaging method."""

    weights_: np.ndarray
    classes_: np.ndarray

    def predict_proba(self, probs_list: Sequence[np.ndarray]) -> np.ndarray:
        if not hasattr(self, "weights_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")
        mats = check_probs_list(probs_list)
        if len(mats) != len(self.weights_):
            raise ValueError(
                f"probs_list has {len(mats)} members but the ensemble was fit on {len(self.weights_)}"
            )
        return np.tensordot(self.weights_, np.stack(mats), axes=1)

    def predict(self, probs_list: Sequence[np.ndarray]) -> np.ndarray:
        return self.predict_proba(probs_list).argmax(axis=1)

    @classmethod
    def from_weights(cls, weights: Sequence[float], num_classes: int) -> WeightedAverage:
        """Rebuild a fitted averager from stored weights (e.g. an ensemble's config.json)."""
        est = WeightedAverage()
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or not len(w) or np.any(w < 0) or not np.isclose(w.sum(), 1.0):
            raise ValueError(f"weights must be non-negative and sum to 1, got {list(weights)!r}")
        est.weights_ = w
        est.classes_ = np.arange(num_classes)
        return est


class AverageEnsemble(WeightedAverage):
    """Plain average of the ``top_k`` members with the best validation accuracy (all when None).

    Ties in accuracy go to the lower validation log loss, then to the earlier member.
    """

    def __init__(self, top_k: int | None = None):
        self.top_k = top_k

    def fit(self, probs_list: Sequence[np.ndarray], y: Any) -> AverageEnsemble:
        mats = check_probs_list(probs_list)
        y = check_labels(y, len(mats[0]), mats[0].shape[1])
        k = len(mats) if self.top_k is None else _check_positive_int(self.top_k, "top_k")
        k = min(k, len(mats))
        ranking = sorted(range(len(mats)), key=lambda i: _score_key(mats[i], y), reverse=True)
        self.selected_ = sorted(ranking[:k])
        self.weights_ = np.zeros(len(mats))
        self.weights_[self.selected_] = 1.0 / k
        self.classes_ = np.arange(mats[0].shape[1])
        return self


class GreedyEnsemble(WeightedAverage):
    """Forward ensemble selection with replacement (Caruana et al. 2004), as AutoGluon does.

    Start from the ``init_size`` best members, then ``size`` times add the member (repeats allowed)
    whose addition gives the best validation accuracy, ties broken by log loss. Weights are the
    selection counts over the number of picks. With ``use_best`` the picks are cut back to the
    prefix that scored best on validation (AutoGluon's default), so a plateau adds no noise.
    """

    def __init__(self, size: int = 20, init_size: int = 1, use_best: bool = True):
        self.size = size
        self.init_size = init_size
        self.use_best = use_best

    def fit(self, probs_list: Sequence[np.ndarray], y: Any) -> GreedyEnsemble:
        size = _check_positive_int(self.size, "size")
        if isinstance(self.init_size, bool) or not isinstance(self.init_size, (int, np.integer)):
            raise ValueError(f"init_size must be a non-negative integer, got {self.init_size!r}")
        if self.init_size < 0:
            raise ValueError(f"init_size must be a non-negative integer, got {self.init_size!r}")
        mats = check_probs_list(probs_list)
        y = check_labels(y, len(mats[0]), mats[0].shape[1])
        ranking = sorted(range(len(mats)), key=lambda i: _score_key(mats[i], y), reverse=True)
        picks = list(ranking[: min(int(self.init_size), len(mats), size)])
        total = np.sum([mats[i] for i in picks], axis=0) if picks else np.zeros_like(mats[0])
        history: list[tuple[float, float]] = []
        if picks:
            history.append(_score_key(total / len(picks), y))
        while len(picks) < size:
            n = len(picks) + 1
            scores = [_score_key((total + m) / n, y) for m in mats]
            best = max(range(len(mats)), key=lambda i: (scores[i], -i))  # earliest member on ties
            picks.append(best)
            total += mats[best]
            history.append(scores[best])
        self.picks_ = list(picks)
        self.scores_ = history
        if self.use_best:  # history[j] scores the first j + offset picks
            offset = max(len(picks) - len(history) + 1, 1)
            best_j = max(range(len(history)), key=lambda j: (history[j], -j))
            picks = picks[: best_j + offset]
        counts = np.bincount(picks, minlength=len(mats)).astype(np.float64)
        self.weights_ = counts / counts.sum()
        self.classes_ = np.arange(mats[0].shape[1])
        return self


class BoostedAverage(WeightedAverage):
    """A SAMME boosting group's rounds, combined with weights alpha_m / sum(alpha) (Zhu et al. 2009).

    The paper's discrete SAMME predicts argmax_k sum_m alpha_m [h_m(x) = k] (:func:`samme_vote`);
    this is its soft twin, the alpha-weighted average of the rounds' probabilities. Being a
    weighted average, it is stored, exported as one model and predicted like every averaging
    ensemble. The alphas come from the rounds' training-split errors (``benchmark.train.boosting``), so
    ``fit`` learns nothing from validation: ``y`` is only checked.
    """

    def __init__(self, alphas: Sequence[float]):
        self.alphas = alphas

    def fit(self, probs_list: Sequence[np.ndarray], y: Any = None) -> BoostedAverage:
        mats = check_probs_list(probs_list)
        if y is not None:
            check_labels(y, len(mats[0]), mats[0].shape[1])
        self.weights_ = _normalised_alphas(self.alphas, len(mats))
        self.classes_ = np.arange(mats[0].shape[1])
        return self


def _normalised_alphas(alphas: Sequence[float], members: int) -> np.ndarray:
    a = np.asarray(alphas, dtype=np.float64)
    if a.shape != (members,) or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"alphas must be {members} finite positive numbers, got {list(alphas)!r}")
    return a / a.sum()


def samme_vote(probs_list: Sequence[np.ndarray], alphas: Sequence[float]) -> np.ndarray:
    """Discrete SAMME: each row's class scores sum_m alpha_m [argmax probs_m = k], scaled to sum 1."""
    mats = check_probs_list(probs_list)
    weights = _normalised_alphas(alphas, len(mats))
    scores = np.zeros_like(mats[0])
    rows = np.arange(len(scores))
    for w, m in zip(weights, mats, strict=True):
        scores[rows, m.argmax(axis=1)] += w
    return scores


# ---- stacking ------------------------------------------------------------------------------------


class StackingEnsemble:
    """A meta-learner over the members' concatenated validation probabilities.

    ``fit`` first scores the meta-learner honestly by cross-fitting on the validation rows
    (:mod:`ensembles.crossfit`, as every fitted ensemble: ``oof_probs_``, each row predicted by a
    model that never saw it), then refits on all of them.
    The learned arrays (``coef_``, ``intercept_`` for the logistic stacker; ``coefs_``,
    ``intercepts_`` for the MLP) are plain NumPy, so they are stored in an npz and rebuilt as Keras
    Dense layers: the logistic stacker's ``predict_proba`` is ``softmax(X @ coef_.T + intercept_)``.
    """

    def __init__(
        self,
        stacker: str = "logistic",
        C: float = 1.0,
        hidden_units: int = 32,
        cv: int = 5,
        max_iter: int = 1000,
        seed: int = 0,
    ):
        self.stacker = stacker
        self.C = C
        self.hidden_units = hidden_units
        self.cv = cv
        self.max_iter = max_iter
        self.seed = seed

    def _validate(self) -> None:
        if self.stacker not in ENSEMBLE_STACKERS:
            raise ValueError(
                f"stacker must be one of {', '.join(ENSEMBLE_STACKERS)}, got {self.stacker!r}"
            )
        if isinstance(self.C, bool) or not isinstance(self.C, (int, float)) or not self.C > 0:
            raise ValueError(f"C must be a positive number, got {self.C!r}")
        _check_positive_int(self.hidden_units, "hidden_units")
        _check_positive_int(self.max_iter, "max_iter")
        if _check_positive_int(self.cv, "cv") < 2:
            raise ValueError(f"cv must be at least 2 folds, got {self.cv!r}")

    def _estimator(self):
        if self.stacker == "logistic":
            from sklearn.linear_model import LogisticRegression

            return LogisticRegression(C=float(self.C), max_iter=int(self.max_iter))
        from sklearn.neural_network import MLPClassifier

        return MLPClassifier(
            hidden_layer_sizes=(int(self.hidden_units),),
            alpha=1.0 / float(self.C) * 1e-3,
            max_iter=int(self.max_iter),
            early_stopping=False,
            random_state=int(self.seed),
        )

    def fit(self, probs_list: Sequence[np.ndarray], y: Any) -> StackingEnsemble:
        from sklearn.exceptions import ConvergenceWarning

        from ensembles.crossfit import cross_fit, validation_folds

        self._validate()
        mats = check_probs_list(probs_list)
        num_classes = mats[0].shape[1]
        y = check_labels(y, len(mats[0]), num_classes)
        present = np.unique(y)
        if len(present) < 2:
            raise ValueError(f"stacking needs at least 2 classes in y, got {present.tolist()}")
        x = np.concatenate(mats, axis=1)
        try:  # no honest out-of-fold score without 2 folds: the caller skips stacking
            splits = validation_folds(y, int(self.cv), int(self.seed))
        except ValueError as exc:
            raise ValueError(f"stacking: {exc}") from None
        folds = len(splits)
        self.num_classes_ = num_classes
        self.n_members_ = len(mats)

        def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
            est = self._estimator().fit(x[train], y[train])
            return self._expand(est.predict_proba(x[test]), est.classes_)

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            self.oof_probs_ = cross_fit(fit_predict, splits, len(y), num_classes)
            est = self._estimator().fit(x, y)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            log.info("stacking: the %s stacker stopped at max_iter=%d", self.stacker, self.max_iter)
        self.cv_folds_ = folds
        self.classes_ = est.classes_.astype(np.int64)
        if self.stacker == "logistic":
            self.coef_, self.intercept_ = self._full_linear(est.coef_, est.intercept_)
        else:
            self.coefs_ = [np.asarray(c, dtype=np.float64) for c in est.coefs_[:-1]]
            self.intercepts_ = [np.asarray(b, dtype=np.float64) for b in est.intercepts_[:-1]]
            last_w, last_b = self._full_linear(est.coefs_[-1].T, est.intercepts_[-1])
            self.coefs_.append(last_w.T)
            self.intercepts_.append(last_b)
        return self

    def _expand(self, probs: np.ndarray, present: np.ndarray) -> np.ndarray:
        full = np.zeros((len(probs), self.num_classes_))
        full[:, present] = probs
        return full

    def _full_linear(
        self, coef: np.ndarray, intercept: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """A (classes, features) softmax layer equivalent to sklearn's, over ALL classes.

        Binary sklearn models give one logit z for class 1 (probability sigmoid(z)); softmax over
        (0, z) is the same. Classes absent from y get a huge negative bias: probability 0.
        """
        coef, intercept = np.asarray(coef, np.float64), np.asarray(intercept, np.float64)
        if coef.shape[0] == 1:
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([[0.0], intercept])
        full_w = np.zeros((self.num_classes_, coef.shape[1]))
        full_b = np.full(self.num_classes_, -1e4)
        full_w[self.classes_] = coef
        full_b[self.classes_] = intercept
        return full_w, full_b

    def predict_proba(self, probs_list: Sequence[np.ndarray]) -> np.ndarray:
        if not hasattr(self, "classes_"):
            raise RuntimeError("StackingEnsemble is not fitted; call fit() first")
        mats = check_probs_list(probs_list)
        if len(mats) != self.n_members_:
            raise ValueError(
                f"probs_list has {len(mats)} members but the stacker was fit on {self.n_members_}"
            )
        h = np.concatenate(mats, axis=1)
        if self.stacker == "logistic":
            return _softmax(h @ self.coef_.T + self.intercept_)
        for w, b in zip(self.coefs_[:-1], self.intercepts_[:-1], strict=True):
            h = np.maximum(h @ w + b, 0.0)
        return _softmax(h @ self.coefs_[-1] + self.intercepts_[-1])

    def predict(self, probs_list: Sequence[np.ndarray]) -> np.ndarray:
        return self.predict_proba(probs_list).argmax(axis=1)

    @property
    def n_params_(self) -> int:
        if self.stacker == "logistic":
            return int(self.coef_.size + self.intercept_.size)
        return int(sum(w.size for w in self.coefs_) + sum(b.size for b in self.intercepts_))

    # ---- storage: npz arrays + JSON settings, never pickle --------------------------------------
    def settings(self) -> dict[str, Any]:
        return {
            "stacker": self.stacker,
            "C": float(self.C),
            "hidden_units": int(self.hidden_units),
            "cv": int(self.cv),
            "cv_folds": int(self.cv_folds_),
            "max_iter": int(self.max_iter),
            "seed": int(self.seed),
            "num_classes": int(self.num_classes_),
            "n_members": int(self.n_members_),
        }

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"classes_": self.classes_}
        if self.stacker == "logistic":
            out.update(coef_=self.coef_, intercept_=self.intercept_)
        else:
            for i, (w, b) in enumerate(zip(self.coefs_, self.intercepts_, strict=True)):
                out[f"coefs_{i}"], out[f"intercepts_{i}"] = w, b
        return out

    @classmethod
    def from_arrays(
        cls, settings: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> StackingEnsemble:
        est = cls(
            stacker=settings["stacker"],
            C=settings["C"],
            hidden_units=settings["hidden_units"],
            cv=settings["cv"],
            max_iter=settings["max_iter"],
            seed=settings["seed"],
        )
        est._validate()
        est.num_classes_, est.n_members_ = settings["num_classes"], settings["n_members"]
        est.cv_folds_ = settings.get("cv_folds", est.cv)
        est.classes_ = np.asarray(arrays["classes_"])
        if est.stacker == "logistic":
            est.coef_, est.intercept_ = (
                np.asarray(arrays["coef_"]),
                np.asarray(arrays["intercept_"]),
            )
        else:
            layers = sum(1 for k in arrays if k.startswith("coefs_"))
            est.coefs_ = [np.asarray(arrays[f"coefs_{i}"]) for i in range(layers)]
            est.intercepts_ = [np.asarray(arrays[f"intercepts_{i}"]) for i in range(layers)]
        return est


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def disagreement_matrix(probs_list: Sequence[np.ndarray]) -> np.ndarray:
    """Share of rows on which each pair of members predicts different classes (symmetric, 0 diag)."""
    preds = np.stack([np.asarray(p).argmax(axis=1) for p in probs_list])
    return (preds[:, None, :] != preds[None, :, :]).mean(axis=2)
