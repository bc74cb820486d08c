"""Temperature scaling (Guo et al. 2017): probabilities that mean what they say, fit on validation.

A network's softmax is often over- or under-confident. One scalar T per model fixes most of it:
``softmax(log p / T)``, with T minimising the validation negative log-likelihood. Dividing every
log-probability of a row by the same positive T keeps the order of the classes, so accuracy never
changes; only confidence does.

The temperature is fit on validation, so its own validation score is cross-fitted
(:mod:`ensembles.crossfit`): each fold is scaled with the temperature fit on the other folds. The
temperature fit on all of validation scales the test probabilities and goes inside the fused and
exported models (``zoo.layers.TemperatureScaling``, which computes the same formula with the same
:data:`PROB_FLOOR`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmark.metrics import log_loss
from ensembles.crossfit import Split, cross_fit

# log(0) is -inf: probabilities are floored before the log, here and in the Keras layer alike.
PROB_FLOOR = 1e-12
# The search interval of T (bounded, on log T): far outside what a trained network needs.
TEMPERATURE_BOUNDS = (0.05, 20.0)
METHOD = "temperature"


def _log_probs(probs: Any) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be (samples, classes), got shape {probs.shape}")
    return np.log(np.clip(probs, PROB_FLOOR, 1.0))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def apply_temperature(probs: Any, temperature: float) -> np.ndarray:
    """``softmax(log(max(p, PROB_FLOOR)) / T)`` row by row, in float64."""
    t = float(temperature)
    if not (t > 0 and math.isfinite(t)):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    return _softmax(_log_probs(probs) / t)


def _nll(log_probs: np.ndarray, y: np.ndarray, temperature: float) -> float:
    z = log_probs / temperature
    z = z - z.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))


def fit_temperature(probs: Any, y: Any) -> float:
    """The T in :data:`TEMPERATURE_BOUNDS` minimising the NLL of ``softmax(log p / T)`` on ``y``
    (scipy's bounded scalar search over log T: the NLL is smooth and unimodal there)."""
    from scipy.optimize import minimize_scalar

    log_probs = _log_probs(probs)
    y = np.asarray(y, dtype=np.int64)
    if y.shape != (len(log_probs),):
        raise ValueError(f"y must hold {len(log_probs)} labels, got shape {y.shape}")
    if not len(y):
        raise ValueError("fitting a temperature needs at least one labelled row")
    low, high = (math.log(b) for b in TEMPERATURE_BOUNDS)
    result = minimize_scalar(
        lambda s: _nll(log_probs, y, math.exp(s)),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(math.exp(result.x))


@dataclass
class Calibration:
    """A fitted temperature, its out-of-fold validation probabilities and the scaled test ones."""

    temperature: float
    fold_temperatures: list[float]
    val_probs: np.ndarray  # out-of-fold: each fold scaled by the temperature of the other folds
    test_probs: np.ndarray  # scaled by ``temperature``, fit on all of validation
    val_loss: float  # before, on the probabilities as given
    val_loss_calibrated: float  # after, out-of-fold
    seed: int  # of the validation folds

    def record(self) -> dict[str, Any]:
        """What the run store keeps in ``temperature.json`` (it adds the files' hashes)."""
        return {
            "method": METHOD,
            "temperature": self.temperature,
            "fold_temperatures": self.fold_temperatures,
            "folds": len(self.fold_temperatures),
            "seed": self.seed,
            "val_loss": self.val_loss,
            "val_loss_calibrated": self.val_loss_calibrated,
            "val_scoring": "out-of-fold",
        }


def calibrate(
    val_probs: np.ndarray,
    test_probs: np.ndarray,
    y_val: np.ndarray,
    splits: list[Split],
    seed: int = 0,
) -> Calibration:
    """Fit a temperature on ``val_probs``: cross-fitted over ``splits`` (made with ``seed``, which
    is recorded) for the validation figures, on all rows for the test probabilities.

    For a fitted ensemble ``val_probs`` are already out-of-fold; the same folds then cross-fit the
    temperature. One scalar fit on thousands of rows, its remaining dependence on a row's own label
    (through the other folds' ensemble weights) is second order."""
    y_val = np.asarray(y_val, dtype=np.int64)
    temperatures: list[float] = []

    def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        t = fit_temperature(val_probs[train], y_val[train])
        temperatures.append(t)
        return apply_temperature(val_probs[test], t)

    oof = cross_fit(fit_predict, splits, len(y_val), val_probs.shape[1])
    temperature = fit_temperature(val_probs, y_val)
    return Calibration(
        temperature=temperature,
        fold_temperatures=temperatures,
        val_probs=oof,
        test_probs=apply_temperature(test_probs, temperature),
        val_loss=log_loss(val_probs, y_val),
        val_loss_calibrated=log_loss(oof, y_val),
        seed=int(seed),
    )
