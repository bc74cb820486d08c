"""Time budgets: parse "1h30m", estimate what each member costs on this machine, plan what fits.

Estimates come from a short timed probe (a few training steps of the real model on random pixels),
stored in a calibration file so the next plan on the same machine answers at once. The plan drops
or shortens what will not fit and says so; the running member is stopped at the end of the epoch
that crosses the deadline (:class:`benchmark.training.DeadlineStop`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark import atomic
from benchmark.errors import ZoobenchError
from benchmark.formatting import duration

log = logging.getLogger(__name__)

_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0}
STARTUP_SECONDS = 3.0  # building and compiling a model, saving it: paid once per member or trial
RESERVE_FRACTION = 0.05  # of the budget, kept for ensembles and the report


def parse_duration(text: str | float | int | None, option: str = "--budget") -> float | None:
    """Seconds in "90s", "30m", "1h", "1h30m" or a plain number of seconds; None stays None."""
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        raw = str(text).strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", raw):
            seconds = float(raw)
        elif raw and re.fullmatch(r"(\d+(\.\d+)?[hms])+", raw):
            seconds = sum(float(n) * _UNIT[u] for n, u in _PART.findall(raw))
        else:
            raise ZoobenchError(
                f"{option}: cannot read {text!r} as a duration (try 90s, 30m, 1h30m)"
            )
    if not seconds > 0:
        raise ZoobenchError(f"{option}: a budget must be positive, got {text!r}")
    return seconds


class Clock:
    """Wall time since the run started, and what is left of its budget (None: no budget)."""

    def __init__(self, budget_seconds: float | None):
        self.budget_seconds = budget_seconds
        self.start = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    @property
    def deadline(self) -> float | None:
        return None if self.budget_seconds is None else self.start + self.budget_seconds

    @property
    def remaining(self) -> float:
        if self.budget_seconds is None:
            return math.inf
        return self.budget_seconds - self.elapsed

    @property
    def expired(self) -> bool:
        return self.remaining <= 0


# ---- throughput calibration -------------------------------------------------------------------------


def calibration_path() -> Path:
    cache = Path(os.environ.get("ZOOBENCH_CACHE", "~/.cache/zoobench")).expanduser()
    return cache / "calibration.json"


def _machine_key() -> str:
    """Probes are valid for this machine's cores and accelerators on this backend and version."""
    from zoo import backend

    return f"cpu{os.cpu_count()}-gpu{len(backend.accelerators())}-{backend.library_version()}"


def calibration_key(spec: dict[str, Any]) -> str:
    canonical = json.dumps(spec, sort_keys=True, default=str)
    return f"{_machine_key()}-{hashlib.sha256(canonical.encode()).hexdigest()[:12]}"


@dataclass
class Throughput:
    """Images per second of one model on this machine: training steps and inference."""

    train: float
    infer: float
    build_seconds: float = 0.0  # building the model (pretrained: loading its weights too)
    measured: bool = True  # False: read from the calibration file


def probe(model_factory, input_shape, num_classes: int, batch_size: int, spec: dict[str, Any],
          steps: int = 3) -> Throughput:  # fmt: skip
    """Time ``steps`` training steps and one inference pass of the model ``model_factory()`` builds.

    The result is kept in the calibration file under ``spec`` (architecture, hp, input size, batch).
    """
    path, key = calibration_path(), calibration_key(spec)
    stored = _read_calibration(path)
    if key in stored:
        entry = stored[key]
        return Throughput(entry["train"], entry["infer"], entry.get("build", 0.0), measured=False)
    import keras
    import numpy as np

    keras.backend.clear_session()
    start = time.perf_counter()
    model = model_factory()
    build = time.perf_counter() - start
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(batch_size, *input_shape)).astype("float32")
    y = rng.integers(0, num_classes, size=(batch_size,))
    model.train_on_batch(x, y)  # trace and build
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    train = steps * batch_size / max(time.perf_counter() - start, 1e-6)
    model.predict_on_batch(x)
    start = time.perf_counter()
    model.predict_on_batch(x)
    infer = batch_size / max(time.perf_counter() - start, 1e-6)
    keras.backend.clear_session()
    stored = _read_calibration(path)
    stored[key] = {
        "train": train,
        "infer": infer,
        "build": build,
        "spec": spec,
        "measured_at": time.time(),
    }
    try:
        atomic.write_json(path, stored)
    except OSError as exc:  # a read-only cache only costs a re-probe next time
        log.warning("could not store calibration in %s: %s", path, exc)
    return Throughput(train, infer, build)


def _read_calibration(path: Path) -> dict[str, Any]:
    try:
        return atomic.read_json(path) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


# ---- the plan ---------------------------------------------------------------------------------------


@dataclass
class Estimate:
    """Seconds a task should take, built from epochs and per-epoch cost."""

    epoch_seconds: float  # one training epoch plus its validation pass
    fixed_seconds: float  # build, compile, predictions on val and test, saving
    epochs: int
    trials: int = 0  # tuner trials (0: not tuned)
    trial_epochs: int = 0
    trial_epoch_share: float = 1.0  # mean trial epochs / trial_epochs (Hyperband's trials vary)
    retrain: bool = True  # tuned: the best trial is retrained for ``epochs``

    @property
    def seconds(self) -> float:
        per_trial = self.trial_epochs * self.trial_epoch_share * self.epoch_seconds
        tuning = self.trials * (per_trial + self.fixed_seconds)
        final = (
            self.epochs * self.epoch_seconds + self.fixed_seconds
            if self.retrain or not self.trials
            else self.fixed_seconds
        )
        return tuning + final


@dataclass
class Decision:
    """What the plan does with one task: run as asked, shortened, or dropped (with the reason)."""

    action: str  # "run" | "shortened" | "dropped"
    estimate: Estimate
    note: str = ""
    changes: dict = field(default_factory=dict)  # {"epochs": 3, "trials": 2}


def fit_to_budget(estimates: list[Estimate], budget_seconds: float | None,
                  reserve_fraction: float = RESERVE_FRACTION) -> list[Decision]:  # fmt: skip
    """Keep tasks in profile order while they fit; shorten (trials, then epochs) or drop the rest."""
    if budget_seconds is None:
        return [Decision("run", e) for e in estimates]
    left = budget_seconds * (1.0 - reserve_fraction)
    decisions = []
    for est in estimates:
        if est.seconds <= left:
            decisions.append(Decision("run", est))
            left -= est.seconds
            continue
        shorter = _shorten(est, left)
        if shorter is None:
            decisions.append(
                Decision(
                    "dropped",
                    est,
                    f"needs ~{duration(est.seconds)}, "
                    f"{duration(max(left, 0))} of the budget left",
                )  # fmt: skip
            )
            continue
        changes = {}
        if shorter.trials != est.trials:
            changes["trials"] = shorter.trials
        if shorter.epochs != est.epochs:
            changes["epochs"] = shorter.epochs
        if shorter.trial_epochs != est.trial_epochs:
            changes["trial_epochs"] = shorter.trial_epochs
        note = ", ".join(f"{k} {getattr(est, k)} -> {v}" for k, v in changes.items())
        decisions.append(
            Decision("shortened", shorter, f"shortened to fit the budget: {note}", changes)
        )
        left -= shorter.seconds
    return decisions


def _shorten(est: Estimate, left: float) -> Estimate | None:
    from dataclasses import replace

    candidate = est
    while candidate.trials > 1 and candidate.seconds > left:
        candidate = replace(candidate, trials=candidate.trials - 1)
    while candidate.trial_epochs > 1 and candidate.seconds > left:
        candidate = replace(candidate, trial_epochs=candidate.trial_epochs - 1)
    while candidate.epochs > 1 and candidate.seconds > left:
        candidate = replace(candidate, epochs=max(1, candidate.epochs // 2))
    return candidate if candidate.seconds <= left else None
