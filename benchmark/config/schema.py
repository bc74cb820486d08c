"""The profile's schema as plain data: every table's keys, defaults and value checks, defined once.

The profile parser (:mod:`benchmark.config.profiles`) checks a whole profile against this module when it
reads the file, every table included; the code that uses an option (:mod:`benchmark.train.training`,
:mod:`benchmark.train.transfer`, :mod:`ensembles.build`) and the planner read their defaults from here,
so an option has one name and one default. This module imports only the standard library and
:mod:`benchmark.errors`: checking a profile never imports Keras or a backend.

Every table is checked the same way: a :class:`Param` rule per key (``*_RULES``), applied by
:func:`check_table`, so every error is one line naming the table, the key, what it accepts and the
value it got (a bool is never a number: TOML's ``true`` is no count). The defaults sit beside the
rules; the rules that span keys (weight averaging without early stopping, a strategy for a
pretrained architecture, ...) follow the table check.

- top level: :data:`TOP_RULES`; ``[data]``: :data:`DATA_RULES`
- ``[training]`` and a member's ``training``: :data:`TRAINING_RULES`, :data:`DEFAULT_TRAINING`
- ``[tuner]`` and a member's ``tune``: :data:`TUNER_RULES`, :data:`TUNER_DEFAULTS`, :data:`SEARCHABLE`
- ``[[members]]``: :data:`MEMBER_RULES`
- a member's ``transfer``: :data:`TRANSFER_RULES`, :data:`TRANSFER_DEFAULTS`
- ``[ensembles]``: :data:`ENSEMBLES_TABLE_RULES`, :data:`ENSEMBLE_DEFAULTS`
- ``[report]``: :data:`REPORT_RULES`; ``[robustness]``: :data:`ROBUSTNESS_RULES`
- preprocessing and augmentation step parameters: :class:`Param` rules beside the steps
  (``validate_steps`` / ``validate_policy``), applied by :func:`check_step_values`
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from benchmark.errors import ZoobenchError

# ---- the one checking mechanism: a Param rule per key, check_table per table --------------------


@dataclass(frozen=True)
class Param:
    """What one option accepts. ``kind``: "choice" (one of ``choices``), "whole" / "number" (within
    bounds; a bool is never a number), "bool", "text" (a non-empty string), "names" (a non-empty
    list of ``choices`` without repeats), "table", "list". ``optional``: None (unset) is accepted
    too; ``alternatives``: other rules a value may satisfy instead."""

    kind: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: ``low`` itself is refused
    high_open: bool = False
    optional: bool = False
    alternatives: tuple[Param, ...] = ()

    def accepts(self, value: Any) -> bool:
        if value is None and self.optional:
            return True
        return self._accepts(value) or any(a.accepts(value) for a in self.alternatives)

    def _accepts(self, value: Any) -> bool:
        if self.kind == "choice":
            return isinstance(value, str) and value in self.choices
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "text":
            return isinstance(value, str)
        if self.kind == "table":
            return isinstance(value, dict)
        if self.kind == "list":
            return isinstance(value, list)
        if self.kind == "names":
            return (
                isinstance(value, (list, tuple))
                and bool(value)
                and all(not isinstance(v, bool) and v in self.choices for v in value)
                and len(set(map(repr, value))) == len(value)
            )
        if self.kind == "whole":
            if not isinstance(value, int) or isinstance(value, bool):
                return False
        elif not is_number(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        own = self._describe()
        return " or ".join([own, *(a.describe() for a in self.alternatives)])

    def _describe(self) -> str:
        simple = {
            "bool": "true or false",
            "text": "a string",
            "table": "a table",
            "list": "a list",
        }
        if self.kind in simple:
            return simple[self.kind]
        if self.kind == "choice":
            return f"one of {', '.join(self.choices)}"
        if self.kind == "names":
            return f"a non-empty list without repeats of {', '.join(map(str, self.choices))}"
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


def whole(low: int | None = None, high: int | None = None, *, optional: bool = False) -> Param:
    return Param("whole", low=low, high=high, optional=optional)


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> Param:
    return Param(
        "number", low=low, high=high, low_open=low_open, high_open=high_open, optional=optional
    )


BOOL = Param("bool")
TEXT = Param("text")
TABLE = Param("table")
LIST = Param("list")


def names(*choices: Any) -> Param:
    return Param("names", choices=tuple(choices))


def check_table(values: Mapping[str, Any], rules: Mapping[str, Param], where: str) -> None:
    """Every key of ``values`` known to ``rules`` and accepted by its rule, else one line:
    ``where.key: must be <what the rule accepts>, got <value>`` (or ``unknown key``)."""
    if not isinstance(values, Mapping):
        raise ZoobenchError(f"{where}: must be a table, got {values!r}")
    for key, value in values.items():
        rule, name = rules.get(key), f"{where}.{key}" if where else str(key)
        if rule is None:
            raise ZoobenchError(f"{name}: unknown key (known: {', '.join(sorted(rules))})")
        if not rule.accepts(value):
            raise ZoobenchError(f"{name}: must be {rule.describe()}, got {value!r}")


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_whole(value: Any, minimum: int = 0) -> bool:
    """An int of at least ``minimum`` (not a bool: TOML's ``true`` is no count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


# ---- the profile's top level, [data], [[members]] ------------------------------------------------

# How the plan costs members (benchmark.plan.costmodel): "probe" times each model, "flops" divides its
# FLOPs into the device's calibrated rate (no member compiled), "auto" is flops on an accelerator.
COSTINGS = ("auto", "probe", "flops")
TOP_RULES: dict[str, Param] = {
    "name": TEXT,
    "description": TEXT,
    "seed": whole(),
    "budget": Param("text", optional=True, alternatives=(number(0, low_open=True),)),  # "30m", s
    "deterministic": BOOL,
    "costing": one_of(*COSTINGS),
    "data": TABLE,
    "training": TABLE,
    "tuner": TABLE,
    "members": LIST,
    "ensembles": TABLE,
    "report": TABLE,
    "robustness": TABLE,
}
TOP_KEYS = frozenset(TOP_RULES)
TOP_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "budget": None,
    "deterministic": False,
    "costing": "auto",
}
DATA_RULES: dict[str, Param] = {
    "dataset": TEXT,
    "data_dir": Param("text", optional=True),
    "val_fraction": number(0, 1, low_open=True, high_open=True),
    "train_size": whole(1, optional=True),
    "val_size": whole(1, optional=True),
    "test_size": whole(1, optional=True),
}
DATA_KEYS = frozenset(DATA_RULES)
DATA_DEFAULTS: dict[str, Any] = {
    "dataset": "cifar10",
    "data_dir": None,  # --data-dir / $ZOOBENCH_DATA
    "val_fraction": 0.1,
    "train_size": None,  # None: all
    "val_size": None,
    "test_size": None,
}


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


TRAINING_RULES: dict[str, Param] = {
    "epochs": whole(1),
    "batch_size": whole(1),
    "optimizer": one_of(*OPTIMIZERS),
    "learning_rate": number(0, low_open=True),
    "weight_decay": number(0),
    "momentum": number(0, 1),
    "nesterov": BOOL,
    "schedule": one_of(*SCHEDULES),
    "warmup_epochs": number(0),
    "step_epochs": whole(1),
    "step_factor": number(0, low_open=True),
    "loss": one_of(*LOSSES),
    "label_smoothing": number(0, 1, high_open=True),
    "early_stopping_patience": whole(0),
    "clipnorm": number(0, low_open=True, optional=True),
    "adversarial": Param("table", optional=True),  # its keys: benchmark.train.adversarial
    "ema": number(0, 1, high_open=True),  # 0: off
    "tta": Param("choice", choices=TTA_VIEWS, alternatives=(whole(1, 6),)),
    "precision": one_of(*PRECISIONS),
    "recipe": Param("text", optional=True),
}


def resolve_training(
    overrides: dict[str, Any] | None = None, where: str = "training"
) -> dict[str, Any]:
    """Defaults plus ``overrides``, checked: unknown keys and bad values name ``where`` and the key."""
    check_table(overrides or {}, TRAINING_RULES, where)
    training = {**DEFAULT_TRAINING, **(overrides or {})}
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
TUNER_RULES: dict[str, Param] = {
    "algorithm": one_of(*ALGORITHMS),
    "max_trials": whole(1),
    "epochs": whole(1),
    "top_k": whole(1),
    "restore": BOOL,
    "hyperband_factor": whole(2),
    "search": TABLE,  # each entry: benchmark.config.profiles checks it against TRAINING_RULES
}

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


TRANSFER_RULES: dict[str, Param] = {
    "warmup_epochs": whole(0, optional=True),
    "fine_tune_lr_factor": number(0, low_open=True),
    "stages": whole(1),
    "stage_lr_decay": number(0, low_open=True),
    "head_trials": whole(1),
    "patience": whole(0),
    "head_batch_size": whole(1),
    "extract_batch_size": whole(1),
    "extract_runtime": one_of(*EXTRACT_RUNTIMES),
    "feature_levels": whole(1),
    "flip_features": BOOL,
}
MEMBER_RULES: dict[str, Param] = {
    "architecture": TEXT,
    "name": TEXT,
    "hp": TABLE,
    "training": TABLE,
    "preprocess": LIST,
    "augment": LIST,
    "strategy": Param("choice", choices=STRATEGIES, optional=True),
    "input_size": whole(8, optional=True),
    "tune": Param("bool", alternatives=(TABLE,)),
    "seeds": whole(1),
    "bagging": whole(0),
    "boosting": whole(0),
    "transfer": TABLE,
}
MEMBER_KEYS = frozenset(MEMBER_RULES)
MEMBER_DEFAULTS: dict[str, Any] = {
    "hp": {},
    "strategy": None,
    "input_size": None,
    "tune": False,
    "seeds": 1,
    "bagging": 0,
    "boosting": 0,
    "transfer": {},
}


def validate_transfer_options(
    options: Mapping[str, Any], where: str = "transfer"
) -> dict[str, Any]:
    """``options`` checked against :data:`TRANSFER_RULES`: known names, values of the right kind.

    Returns them as given (no defaults filled in: a member's ``transfer`` table is part of its id).
    """
    for old in set(options) & set(RENAMED_TRANSFER_OPTIONS):
        raise ZoobenchError(
            f"{where}.{old}: unknown key ({old} is now {RENAMED_TRANSFER_OPTIONS[old]})"
        )
    check_table(options, TRANSFER_RULES, where)
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


ENSEMBLE_RULES: dict[str, Param] = {
    "methods": names(*ENSEMBLE_METHODS),
    "top_k": whole(1),
    "greedy_size": whole(1),
    "greedy_init": whole(0),
    "greedy_use_best": BOOL,
    "stacker": one_of(*ENSEMBLE_STACKERS),
    "stacker_C": number(0, low_open=True),
    "stacker_hidden": whole(1),
    "stacker_cv": whole(2),
    "cv_folds": whole(2),
    "calibrate": BOOL,
    "min_members": whole(1),
    "export_best": BOOL,
}
ENSEMBLES_TABLE_RULES: dict[str, Param] = {"enabled": BOOL, **ENSEMBLE_RULES}


def resolve_ensembles(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ensemble settings (no ``enabled``) with defaults filled in; unknown keys and bad values
    are user errors."""
    config = dict(config or {})
    check_table(config, ENSEMBLE_RULES, "ensembles")
    out = {**ENSEMBLE_DEFAULTS, **config}
    out["methods"] = list(out["methods"])
    return out


# ---- [report] (what the runner reads before it builds reports.build_report) -----------------------

REPORT_DEFAULTS: dict[str, Any] = {"enabled": True}  # enabled = false: no HTML report after a run


REPORT_RULES: dict[str, Param] = {"enabled": BOOL}


def resolve_report(table: Mapping[str, Any] | None) -> dict[str, Any]:
    """The [report] table with defaults filled in; unknown keys and bad values are user errors."""
    check_table(dict(table or {}), REPORT_RULES, "report")
    return {**REPORT_DEFAULTS, **(table or {})}


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


ROBUSTNESS_RULES: dict[str, Param] = {
    "enabled": BOOL,
    "corruptions": names(*CORRUPTIONS),
    "severities": names(*SEVERITIES),
    "images": whole(1),
    "adabn": BOOL,
    "tent": BOOL,
    "fgsm_epsilon": number(0),  # pixels of the 0-255 input
    "fgsm_images": whole(0),
}


def resolve_robustness(table: Mapping[str, Any] | None) -> dict[str, Any]:
    """The [robustness] table with defaults filled in; unknown keys and bad values are user errors."""
    check_table(dict(table or {}), ROBUSTNESS_RULES, "robustness")
    out = {**ROBUSTNESS_DEFAULTS, **(table or {})}
    out["corruptions"], out["severities"] = list(out["corruptions"]), list(out["severities"])
    return out


# ---- step parameters (benchmark.data.preprocess, benchmark.data.augment) ------------------------------------


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
