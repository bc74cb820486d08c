"""The profile's schema as plain data: every table's keys, defaults and value checks, defined once.

The profile parser (:mod:`benchmark.config.profiles`) checks a whole profile against this module when it
reads the file, every table included; the code that uses an option (:mod:`benchmark.train.training`,
:mod:`benchmark.train.transfer`, :mod:`ensembles.build`) and the planner read their defaults from here,
so an option has one name and one default. This module imports only the standard library and
:mod:`benchmark.errors`: checking a profile never imports Keras or a backend.

Tables and what checks them:

- top level: :data:`TOP_KEYS`; ``[data]``: :data:`DATA_KEYS`
- ``[training]`` and a member's ``training``: :data:`DEFAULT_TRAINING`, :func:`resolve_training`
- ``[tuner]`` and a member's ``tune``: :data:`TUNER_DEFAULTS`, :data:`ALGORITHMS`, :data:`SEARCHABLE`
- ``[[members]]``: :data:`MEMBER_KEYS`, :data:`STRATEGIES`
- a member's ``transfer``: :data:`TRANSFER_DEFAULTS`, :func:`validate_transfer_options`
- ``[ensembles]``: :data:`ENSEMBLES_TABLE` (``enabled`` plus :data:`ENSEMBLE_DEFAULTS`),
  :func:`resolve_ensembles`
- ``[report]``: :data:`REPORT_DEFAULTS`, :func:`resolve_report`
- ``[robustness]``: :data:`ROBUSTNESS_DEFAULTS`, :data:`CORRUPTIONS`, :func:`resolve_robustness`
- preprocessing and augmentation step parameters: :class:`Param` rules, :func:`check_step_values`
  (the rules sit beside the steps, in ``validate_steps`` / ``validate_policy``)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from benchmark.errors import ZoobenchError

# ---- the profile's top level, [data], [[members]] ------------------------------------------------

TOP_KEYS = frozenset(
    {
        "name",
        "description",
        "seed",
        "budget",
        "deterministic",
        "data",
        "training",
        "tuner",
        "members",
        "ensembles",
        "report",
        "robustness",
    }
)
DATA_KEYS = frozenset(
    {"dataset", "data_dir", "val_fraction", "train_size", "val_size", "test_size"}
)
MEMBER_KEYS = frozenset(
    {
        "architecture",
        "name",
        "hp",
        "training",
        "preprocess",
        "augment",
        "strategy",
        "input_size",
        "tune",
        "seeds",
        "bagging",
        "boosting",
        "transfer",
    }
)

# ---- [training] -----------------------------------------------------------------------------------

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd", "muon")
SCHEDULES = ("constant", "step", "cosine", "one-cycle", "triangle")
# Keras dtype policies a member can train under; "auto" is bf16 on an accelerator, float32 on a CPU.
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
TTA_VIEWS = ("none", "flip", "flip-translate")  # or a number of views, 1-6 (zoo.record_layers)
LOSSES = ("auto", "categorical", "sparse")

DEFAULT_TRAINING: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 128,
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "weight_decay": 0.0,
    "momentum": 0.9,  # SGD and RMSprop
    "nesterov": False,  # SGD
    "schedule": "constant",
    "warmup_epochs": 0.0,  # cosine
    "step_epochs": 10,  # step: multiply by step_factor every step_epochs epochs
    "step_factor": 0.1,
    "loss": "auto",  # categorical unless labels are plain and no label smoothing is asked for
    "label_smoothing": 0.0,
    "early_stopping_patience": 5,  # 0 turns early stopping off
    "clipnorm": None,
    "adversarial": None,  # {"epsilon": 2.0, "ratio": 0.5}: FGSM adversarial training
    # The speed records' parts (benchmark.config.recipes). Left at these values they are not part
    # of a member's ID (see training_identity), so members stored before they existed are kept.
    "ema": 0.0,  # weight averaging: the optimizer's EMA momentum; the averaged weights are kept
    "tta": "none",  # test-time views averaged inside the stored model: "flip", "flip-translate", 1-6
    "precision": "float32",  # a Keras dtype policy (PRECISIONS)
    "recipe": None,  # the recipe the options came from (benchmark.config.recipes), for the record
}
# Options added after members were first stored: at their default they stay out of the member's ID.
LATE_TRAINING_OPTIONS = ("ema", "tta", "precision", "recipe")


def training_identity(training: dict[str, Any]) -> dict[str, Any]:
    """``training`` as a member's ID hashes it: late options at their default left out."""
    return {
        k: v
        for k, v in training.items()
        if not (k in LATE_TRAINING_OPTIONS and v == DEFAULT_TRAINING[k])
    }


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_whole(value: Any, minimum: int = 0) -> bool:
    """An int of at least ``minimum`` (not a bool: TOML's ``true`` is no count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def resolve_training(
    overrides: dict[str, Any] | None = None, where: str = "training"
) -> dict[str, Any]:
    """Defaults plus ``overrides``, checked: unknown keys and bad values name ``where`` and the key."""
    training = dict(DEFAULT_TRAINING)
    for key, value in (overrides or {}).items():
        if key not in DEFAULT_TRAINING:
            known = ", ".join(sorted(DEFAULT_TRAINING))
            raise ZoobenchError(f"{where}: unknown training option {key!r} (known: {known})")
        training[key] = value
    checks = {
        "optimizer": training["optimizer"] in OPTIMIZERS,
        "schedule": training["schedule"] in SCHEDULES,
        "loss": training["loss"] in LOSSES,
        "epochs": is_whole(training["epochs"], 1),
        "batch_size": is_whole(training["batch_size"], 1),
        "learning_rate": is_number(training["learning_rate"]) and training["learning_rate"] > 0,
        "weight_decay": is_number(training["weight_decay"]) and training["weight_decay"] >= 0,
        "label_smoothing": is_number(training["label_smoothing"])
        and 0 <= training["label_smoothing"] < 1,
        "early_stopping_patience": is_whole(training["early_stopping_patience"]),
        "warmup_epochs": is_number(training["warmup_epochs"]) and training["warmup_epochs"] >= 0,
        "adversarial": training["adversarial"] is None or isinstance(training["adversarial"], dict),
        "ema": is_number(training["ema"]) and 0 <= training["ema"] < 1,
        "tta": training["tta"] in TTA_VIEWS
        or (is_whole(training["tta"], 1) and training["tta"] <= 6),
        "precision": training["precision"] in PRECISIONS,
        "recipe": training["recipe"] is None or isinstance(training["recipe"], str),
    }
    for key, ok in checks.items():
        if not ok:
            allowed = {
                "optimizer": OPTIMIZERS,
                "schedule": SCHEDULES,
                "loss": LOSSES,
                "precision": PRECISIONS,
                "tta": (*TTA_VIEWS, "a number of views 1-6"),
                "ema": ("0 (off) or a momentum in (0, 1), e.g. 0.99",),
            }.get(key)
            hint = f" (one of {', '.join(map(str, allowed))})" if allowed else ""
            raise ZoobenchError(f"{where}.{key}: bad value {training[key]!r}{hint}")
    if training["ema"] and training["early_stopping_patience"]:
        raise ZoobenchError(
            f"{where}.ema: weight averaging keeps the averaged weights, early stopping would restore "
            "raw ones: set early_stopping_patience = 0 with it"
        )
    return training


# ---- [tuner] --------------------------------------------------------------------------------------

ALGORITHMS = ("random", "grid", "bayesian", "hyperband")
TUNER_DEFAULTS: dict[str, Any] = {
    "algorithm": "random",
    "max_trials": 4,
    "epochs": 2,  # per trial (Hyperband: the most epochs of a trial)
    "top_k": 1,  # the best k trials become members
    "restore": True,  # True: the trial's model is the member; False: retrain with the member's epochs
    "hyperband_factor": 3,
    "search": {},
}
# Training settings a search may vary (besides the architecture's hp); ``augment`` picks a policy.
SEARCHABLE = frozenset(
    {
        "learning_rate",
        "optimizer",
        "label_smoothing",
        "weight_decay",
        "schedule",
        "batch_size",
        "momentum",
        "augment",
    }
)
RANGE_KEYS = frozenset({"min", "max", "sampling", "step"})
SAMPLINGS = ("linear", "log", "reverse_log")

# ---- a member's transfer table (benchmark.train.transfer) -----------------------------------------------

STRATEGIES = ("feature-extraction", "fine-tuning", "progressive-unfreezing")
TRANSFER_DEFAULTS: dict[str, Any] = {
    "warmup_epochs": None,  # fine-tuning: head epochs (default: a third of ``epochs``, at least 1)
    "fine_tune_lr_factor": 0.1,  # fine-tuning: backbone learning rate = learning_rate * factor
    "stages": 3,  # progressive unfreezing: unfreezing stages after the head stage
    "stage_lr_decay": 0.3,  # progressive unfreezing: lr of stage k = learning_rate * decay**k
    "head_trials": 6,  # feature extraction: Keras Tuner trials over heads
    "patience": 5,  # feature extraction: early-stopping patience (val_accuracy) per head trial
    "head_batch_size": 256,  # feature extraction: batch size on cached features
    "extract_batch_size": 128,  # feature extraction: batch size of the backbone pass
    "extract_runtime": "auto",  # feature extraction: the backbone pass's runtime (EXTRACT_RUNTIMES)
    "feature_levels": 1,  # feature extraction: pooled ends of the top N stages (1: last layer only)
    "flip_features": False,  # feature extraction: train on images and mirrors; average both to predict
}
# auto: ONNX Runtime where installed and equal to TensorFlow within 1e-3 (benchmark.train.extraction)
EXTRACT_RUNTIMES = ("auto", "tf", "xla", "onnx", "litert")
RENAMED_TRANSFER_OPTIONS = {"max_trials": "head_trials"}  # old name -> the one name now


def validate_transfer_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` checked against :data:`TRANSFER_DEFAULTS`: known names, values of the right kind.

    Returns them as given (no defaults filled in: a member's ``transfer`` table is part of its id).
    """
    unknown = sorted(set(options) - set(TRANSFER_DEFAULTS))
    if unknown:
        renamed = [
            f"{old} is now {RENAMED_TRANSFER_OPTIONS[old]}"
            for old in unknown
            if old in RENAMED_TRANSFER_OPTIONS
        ]
        raise ZoobenchError(
            f"unknown transfer option {', '.join(unknown)}"
            + (f" ({'; '.join(renamed)})" if renamed else "")
            + f"; known: {', '.join(sorted(TRANSFER_DEFAULTS))}"
        )
    for key, value in options.items():
        default = TRANSFER_DEFAULTS[key]
        least = 0 if key in ("patience", "warmup_epochs") else 1
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif key == "extract_runtime":
            if value not in EXTRACT_RUNTIMES:
                raise ZoobenchError(
                    f"transfer option extract_runtime must be one of "
                    f"{', '.join(EXTRACT_RUNTIMES)}, got {value!r}"
                )
            ok = True
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        else:  # whole numbers; None where the default is None
            ok = (value is None and default is None) or (
                isinstance(value, int) and not isinstance(value, bool) and value >= least
            )
        if not ok:
            want = {bool: "true or false", float: "a number > 0"}.get(
                type(default), f"a whole number >= {least}"
            )
            raise ZoobenchError(f"transfer option {key} must be {want}, got {value!r}")
    return dict(options)


def transfer_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """:data:`TRANSFER_DEFAULTS` with ``options`` applied (checked): what a strategy runs with."""
    return {**TRANSFER_DEFAULTS, **validate_transfer_options(options or {})}


# ---- [ensembles] (ensembles.build) ----------------------------------------------------------------

ENSEMBLE_METHODS = ("average-all", "top-k", "greedy", "stacking", "bagging", "seeds", "boosting")
ENSEMBLE_STACKERS = ("logistic", "mlp")
# Every key ensembles.build_ensembles takes, with its default. Documented in docs/CONTRACTS.md.
ENSEMBLE_DEFAULTS: dict[str, Any] = {
    "methods": list(ENSEMBLE_METHODS),
    "top_k": 3,
    "greedy_size": 20,
    "greedy_init": 1,
    "greedy_use_best": True,
    "stacker": "logistic",
    "stacker_C": 1.0,
    "stacker_hidden": 32,
    "stacker_cv": 5,
    "cv_folds": 5,  # validation folds of every other out-of-fold score (fitted ensembles, calibration)
    "calibrate": True,  # temperature scaling of every member and ensemble, fit on validation
    "min_members": 2,
    "export_best": True,
}
# The profile's [ensembles] table: ``enabled = false`` skips the ensembles; the rest is the above.
ENSEMBLES_TABLE: dict[str, Any] = {"enabled": True, **ENSEMBLE_DEFAULTS}


def resolve_ensembles(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ensemble settings (no ``enabled``) with defaults filled in; unknown keys and bad values
    are user errors."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(ENSEMBLE_DEFAULTS))
    if unknown:
        raise ZoobenchError(
            f"[ensembles] has unknown key(s) {', '.join(unknown)}; "
            f"known: {', '.join(ENSEMBLE_DEFAULTS)}"
        )
    out = {**ENSEMBLE_DEFAULTS, **config}
    methods = out["methods"]
    if (
        isinstance(methods, str)
        or not isinstance(methods, (list, tuple))
        or not all(isinstance(m, str) for m in methods)
    ):
        raise ZoobenchError(f"[ensembles] methods must be a list of names, got {methods!r}")
    bad = [m for m in methods if m not in ENSEMBLE_METHODS]
    if bad:
        raise ZoobenchError(
            f"[ensembles] methods: unknown method(s) {', '.join(bad)}; "
            f"known: {', '.join(ENSEMBLE_METHODS)}"
        )
    out["methods"] = list(methods)
    for key in ("top_k", "greedy_size", "stacker_hidden", "min_members"):
        if isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < 1:
            raise ZoobenchError(f"[ensembles] {key} must be a positive integer, got {out[key]!r}")
    init = out["greedy_init"]
    if isinstance(init, bool) or not isinstance(init, int) or init < 0:
        raise ZoobenchError(f"[ensembles] greedy_init must be an integer >= 0, got {init!r}")
    for key in ("stacker_cv", "cv_folds"):
        cv = out[key]
        if isinstance(cv, bool) or not isinstance(cv, int) or cv < 2:
            raise ZoobenchError(f"[ensembles] {key} must be an integer >= 2, got {cv!r}")
    if out["stacker"] not in ENSEMBLE_STACKERS:
        raise ZoobenchError(
            f"[ensembles] stacker must be one of {', '.join(ENSEMBLE_STACKERS)}, "
            f"got {out['stacker']!r}"
        )
    c = out["stacker_C"]
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not c > 0:
        raise ZoobenchError(f"[ensembles] stacker_C must be a positive number, got {c!r}")
    for key in ("greedy_use_best", "export_best", "calibrate"):
        if not isinstance(out[key], bool):
            raise ZoobenchError(f"[ensembles] {key} must be true or false, got {out[key]!r}")
    return out


# ---- [report] (what the runner reads before it builds reports.build_report) -----------------------

REPORT_DEFAULTS: dict[str, Any] = {"enabled": True}  # enabled = false: no HTML report after a run


def resolve_report(table: Mapping[str, Any] | None) -> dict[str, Any]:
    """The [report] table with defaults filled in; unknown keys and bad values are user errors."""
    table = dict(table or {})
    unknown = sorted(set(table) - set(REPORT_DEFAULTS))
    if unknown:
        raise ZoobenchError(
            f"[report] has unknown key(s) {', '.join(unknown)}; known: {', '.join(REPORT_DEFAULTS)}"
        )
    out = {**REPORT_DEFAULTS, **table}
    if not isinstance(out["enabled"], bool):
        raise ZoobenchError(f"[report] enabled must be true or false, got {out['enabled']!r}")
    return out


# ---- [robustness] (benchmark.run.robustness, benchmark.data.corruptions) ----------------------------------

# The generated corruptions (their parameters: benchmark.data.corruptions.PARAMETERS) and severities.
CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "gaussian_blur",
    "motion_blur",
    "jpeg",
    "contrast",
    "brightness",
    "pixelate",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "elastic_transform",
)
# CIFAR-10-C's fifteen (Hendrycks & Dietterich 2019), in RobustBench's order: the default set.
# gaussian_blur is one of the paper's four extra corruptions ("jpeg" is its jpeg_compression).
CIFAR10_C = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg",
)
SEVERITIES = (1, 2, 3, 4, 5)
# Off unless a profile turns it on: a profile without the table costs nothing more.
ROBUSTNESS_DEFAULTS: dict[str, Any] = {
    "enabled": False,
    "corruptions": list(CIFAR10_C),
    "severities": [1, 3, 5],
    "images": 1100,  # test images corrupted, per (corruption, severity): 95% intervals <= +-3 points
    "adabn": True,  # also score with the BN statistics re-estimated on each corrupted set
    "tent": False,  # also score with TENT (entropy minimisation of the BN affine parameters)
    "fgsm_epsilon": 2.0,  # pixels of the raw 0-255 input, like training's adversarial epsilon
    "fgsm_images": 1100,  # clean test images attacked (0: no FGSM column); +-3 points, as images
}


def resolve_robustness(table: Mapping[str, Any] | None) -> dict[str, Any]:
    """The [robustness] table with defaults filled in; unknown keys and bad values are user errors."""
    table = dict(table or {})
    unknown = sorted(set(table) - set(ROBUSTNESS_DEFAULTS))
    if unknown:
        raise ZoobenchError(
            f"[robustness] has unknown key(s) {', '.join(unknown)}; "
            f"known: {', '.join(ROBUSTNESS_DEFAULTS)}"
        )
    out = {**ROBUSTNESS_DEFAULTS, **table}
    for key in ("enabled", "adabn", "tent"):
        if not isinstance(out[key], bool):
            raise ZoobenchError(f"[robustness] {key} must be true or false, got {out[key]!r}")
    for key, choices in (("corruptions", CORRUPTIONS), ("severities", SEVERITIES)):
        values = out[key]
        if (
            isinstance(values, str)
            or not isinstance(values, (list, tuple))
            or not values
            or len(set(map(repr, values))) != len(values)
        ):
            raise ZoobenchError(
                f"[robustness] {key} must be a non-empty list without repeats, got {values!r}"
            )
        bad = [v for v in values if isinstance(v, bool) or v not in choices]
        if bad:
            raise ZoobenchError(
                f"[robustness] {key}: unknown {', '.join(map(repr, bad))}; "
                f"choose from {', '.join(map(str, choices))}"
            )
        out[key] = list(values)
    for key, least in (("images", 1), ("fgsm_images", 0)):
        if isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < least:
            raise ZoobenchError(
                f"[robustness] {key} must be a whole number >= {least}, got {out[key]!r}"
            )
    if not is_number(out["fgsm_epsilon"]) or out["fgsm_epsilon"] < 0:
        raise ZoobenchError(
            f"[robustness] fgsm_epsilon must be a number >= 0 (pixels of the "
            f"0-255 input), got {out['fgsm_epsilon']!r}"
        )
    return out


# ---- step parameters (benchmark.data.preprocess, benchmark.data.augment) ------------------------------------


@dataclass(frozen=True)
class Param:
    """What one step parameter accepts: one of ``choices``, or a (whole) number within bounds."""

    kind: str  # "choice" | "whole" | "number"
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: ``low`` itself is refused
    high_open: bool = False

    def accepts(self, value: Any) -> bool:
        if self.kind == "choice":
            return isinstance(value, str) and value in self.choices
        if self.kind == "whole":
            if not isinstance(value, int) or isinstance(value, bool):
                return False
        elif not is_number(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        if self.kind == "choice":
            return f"one of {', '.join(self.choices)}"
        what = "a whole number" if self.kind == "whole" else "a number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{what} in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{what} {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{what} {'<' if self.high_open else '<='} {self.high:g}"
        return what


def one_of(*choices: str) -> Param:
    return Param("choice", choices=tuple(choices))


def whole(low: int | None = None, high: int | None = None) -> Param:
    return Param("whole", low=low, high=high)


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Param:
    return Param("number", low=low, high=high, low_open=low_open, high_open=high_open)


def check_step_values(
    steps: Sequence[dict[str, Any]], rules: Mapping[str, Mapping[str, Param]], what: str
) -> list[dict[str, Any]]:
    """Check the parameter values of ``steps`` (names already checked) against ``rules``."""
    for spec in steps:
        name = spec["name"]
        for param, value in spec.items():
            rule = rules.get(name, {}).get(param)
            if rule is not None and not rule.accepts(value):
                raise ZoobenchError(
                    f"{what} step {name!r}: {param} must be {rule.describe()}, got {value!r}"
                )
    return list(steps)
