"""Time budgets: parse "1h30m", estimate what each member costs on this machine, plan what pays.

Estimates come from a short timed probe (a few training steps of the real model on random pixels,
in windows of which the fastest counts), stored in a calibration file so the next plan on the same
machine answers at once. A probe taken while other processes shared the cores is marked and
measured again once the machine is quiet; a finished member whose epochs ran much faster than its
probe replaces it. The plan spends the budget by value (:func:`fit_to_budget`: expected accuracy
per estimated second, ``benchmark.plan.value``), shortens or drops what does not fit and says why; the
runner re-fits the rest at the pace the run really goes (:class:`Pace`, ``benchmark.plan.tasks.replan``).
The running member is stopped at the end of the epoch that crosses the deadline
(:class:`benchmark.train.training.DeadlineStop`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmark import atomic
from benchmark.formatting import duration, percent

log = logging.getLogger(__name__)

STARTUP_SECONDS = 3.0  # building and compiling a model, saving it: paid once per member or trial
# of the budget, kept for ensembles, robustness and the report (cpu-quick's took about 3 minutes
# of its 30 with two 160 px backbones to attack and to run on corrupted pictures)
RESERVE_FRACTION = 0.10


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
    from zoo.weights import cache_root

    return cache_root() / "calibration.json"


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
    loaded: bool = False  # measured while other processes took a share of the cores
    source: str = "probe"  # "probe" | "live" (a finished member's epochs replaced the probe's)


# ---- how busy the machine is ------------------------------------------------------------------------

PROBE_WINDOWS = 3  # timed windows a probe takes; the fastest counts (load only ever slows one)
LOADED_SHARE = 0.25  # others' share of the cores during a probe above which it is "under load"
LOADAVG_PER_CORE = 0.5  # without /proc/stat: 1-minute load beyond our own 1, per core
LIVE_FASTER = 1.3  # a member's real epochs this much faster than its probe replace the probe
FLOPS_OFF_BY = 1.15  # live epochs this far from a FLOP estimate, either way, replace it
QUIET_FOR_SECONDS = 60.0  # how long one "is the machine quiet?" answer is reused


@dataclass(frozen=True)
class Load:
    """How busy the machine was: the 1-minute load average and, on Linux, the share of all cores'
    time that other processes used (from /proc/stat less this process's own CPU time)."""

    loadavg: float | None = None
    others: float | None = None

    @property
    def loaded(self) -> bool:
        if self.others is not None:
            return self.others > LOADED_SHARE
        if self.loadavg is None:
            return False
        return self.loadavg - 1.0 > (os.cpu_count() or 1) * LOADAVG_PER_CORE


def _loadavg() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):  # not on every platform
        return None


def _cpu_counters() -> tuple[float, float] | None:
    """(CPU-seconds every process has used, CPU-seconds this process has used), or None where
    /proc/stat is missing. Steal time counts as used: a hypervisor's other guests are load too."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
        ticks = float(os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, AttributeError):
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 5:
        return None
    values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    busy = sum(values) - values[3] - values[4]
    return busy / ticks, time.process_time()


def others_share(
    before: tuple[float, float] | None,
    after: tuple[float, float] | None,
    wall: float,
    cpus: int | None = None,
) -> float | None:
    """The share of all cores' time that processes other than this one used between two
    :func:`_cpu_counters` readings ``wall`` seconds apart (None without them)."""
    if before is None or after is None or wall <= 0:
        return None
    others = (after[0] - before[0]) - (after[1] - before[1])
    return min(1.0, max(0.0, others / (wall * (cpus or os.cpu_count() or 1))))


def load_now(window: float = 0.3) -> Load:
    """The machine's load over the next ``window`` seconds (this process idle meanwhile)."""
    before, start = _cpu_counters(), time.perf_counter()
    time.sleep(window)
    share = others_share(before, _cpu_counters(), time.perf_counter() - start)
    return Load(_loadavg(), share)


_quiet: tuple[float, bool] | None = None


def machine_quiet() -> bool:
    """Whether nothing else takes a share of the cores now (answer reused for a minute): a
    calibration figure measured under load is measured again only on a quiet machine."""
    global _quiet
    now = time.monotonic()
    if _quiet is None or now - _quiet[0] > QUIET_FOR_SECONDS:
        _quiet = (now, not load_now().loaded)
    return _quiet[1]


# ---- throughput calibration -------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """One probe's figures and the load it was taken under."""

    train: float
    infer: float
    build: float
    load: Load


def best_rate(
    step: Callable[[], Any],
    items_per_step: int,
    steps: int,
    windows: int,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Items per second of ``step``: the fastest of ``windows`` timed windows of ``steps`` calls.

    Another job on the cores only ever slows a window down, so the fastest is the nearest to
    what the machine does on its own."""
    best = 0.0
    for _ in range(max(1, windows)):
        start = clock()
        for _ in range(max(1, steps)):
            step()
        best = max(best, max(1, steps) * items_per_step / max(clock() - start, 1e-6))
    return best


def _time_model(
    model_factory, input_shape, num_classes: int, batch_size: int, steps: int, windows: int
) -> Timing:
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
    model.predict_on_batch(x)
    loadavg, counters, start = _loadavg(), _cpu_counters(), time.perf_counter()
    train = best_rate(lambda: model.train_on_batch(x, y), batch_size, steps, windows)
    infer = best_rate(lambda: model.predict_on_batch(x), batch_size, 1, windows)
    share = others_share(counters, _cpu_counters(), time.perf_counter() - start)
    keras.backend.clear_session()
    return Timing(train, infer, build, Load(loadavg, share))


def probe(
    model_factory,
    input_shape,
    num_classes: int,
    batch_size: int,
    spec: dict[str, Any],
    steps: int = 2,
    windows: int = PROBE_WINDOWS,
) -> Throughput:
    """Time training steps and inference of the model ``model_factory()`` builds: ``windows``
    windows of ``steps`` steps each, the fastest kept.

    The result is kept in the calibration file under ``spec`` (architecture, hp, input size, batch)
    with the load it was measured under. A figure measured under load (others used more than
    ``LOADED_SHARE`` of the cores) is marked and measured again the next time the machine is
    quiet instead of being trusted; while the machine is still busy it stands (so does the run).
    """
    path, key = calibration_path(), calibration_key(spec)
    entry = _read_calibration(path).get(key)
    if _has_figures(entry) and entry.get("source") != "flops":  # a FLOP estimate is no probe
        loaded = bool(entry.get("loaded", False))  # entries from before the mark: trusted
        if not loaded or not machine_quiet():
            return Throughput(
                float(entry["train"]),
                float(entry["infer"]),
                float(entry.get("build", 0.0)),
                measured=False,
                loaded=loaded,
                source=str(entry.get("source", "probe")),
            )
        log.info(
            "probing %s again: its stored figure was measured under load", spec.get("architecture")
        )
    t = _time_model(model_factory, input_shape, num_classes, batch_size, steps, windows)
    loaded = t.load.loaded
    if loaded:
        log.info(
            "the probe of %s ran under load (load average %s, others %s of the cores): "
            "marked, measured again on a quiet machine",
            spec.get("architecture"),
            t.load.loadavg,
            t.load.others,
        )

    def update(stored: dict[str, Any]) -> None:
        stored[key] = {
            **(stored.get(key) if isinstance(stored.get(key), dict) else {}),  # keeps "accuracy"
            "train": t.train,
            "infer": t.infer,
            "build": t.build,
            "spec": spec,
            "measured_at": time.time(),
            "loadavg": t.load.loadavg,
            "others_cpu": t.load.others,
            "loaded": loaded,
            "source": "probe",
        }

    _update_calibration(path, update)
    return Throughput(t.train, t.infer, t.build, loaded=loaded)


def observe_epochs(spec: dict[str, Any], speedup: float) -> bool:
    """A finished member of ``spec`` ran its epochs ``speedup`` times as fast as its stored probe
    said: at ``LIVE_FASTER`` or more the probe was taken under load, and the live figure
    replaces it (train and inference throughput scaled alike; marked ``"source": "live"``), so
    one loaded probe does not shape every later plan. A FLOP estimate
    (``benchmark.plan.costmodel``) is replaced whenever it was off by ``FLOPS_OFF_BY`` either way:
    it never measured the model. True when it replaced the figure."""
    if not speedup > 0 or not math.isfinite(speedup):
        return False
    key, replaced = calibration_key(spec), []
    off = abs(math.log(speedup)) >= math.log(FLOPS_OFF_BY)

    def update(stored: dict[str, Any]) -> None:
        entry = stored.get(key)
        from_flops = isinstance(entry, dict) and entry.get("source") == "flops"
        if _has_figures(entry) and (speedup >= LIVE_FASTER or (from_flops and off)):
            entry.update(
                train=float(entry["train"]) * speedup,
                infer=float(entry["infer"]) * speedup,
                loaded=False,
                source="live",
                measured_at=time.time(),
            )
            replaced.append(key)

    _update_calibration(calibration_path(), update)
    return bool(replaced)


def record_accuracy(spec: dict[str, Any], recipe: str, observation: dict[str, Any]) -> None:
    """Keep what a finished member reached (``{"val_accuracy", "epochs", "train_images",
    "num_classes"}``) under its probe ``spec`` and training ``recipe``: the next plan on this
    machine expects it instead of the prior (``benchmark.plan.value``)."""
    key = calibration_key(spec)

    def update(stored: dict[str, Any]) -> None:
        entry = stored.get(key) if isinstance(stored.get(key), dict) else {"spec": spec}
        seen = entry.get("accuracy") if isinstance(entry.get("accuracy"), dict) else {}
        seen[recipe] = {**observation, "at": time.time()}
        entry["accuracy"] = seen
        stored[key] = entry

    _update_calibration(calibration_path(), update)


def observed_accuracy(spec: dict[str, Any], recipe: str) -> dict[str, Any] | None:
    """What :func:`record_accuracy` kept for ``spec`` and ``recipe`` (None: nothing usable)."""
    entry = _read_calibration(calibration_path()).get(calibration_key(spec))
    seen = entry.get("accuracy") if isinstance(entry, dict) else None
    found = seen.get(recipe) if isinstance(seen, dict) else None
    try:
        if found and 0.0 <= float(found["val_accuracy"]) <= 1.0 and float(found["epochs"]) > 0:
            return found
    except (KeyError, TypeError, ValueError):
        pass
    return None


def _has_figures(entry: Any) -> bool:
    try:
        return isinstance(entry, dict) and float(entry["train"]) > 0 and float(entry["infer"]) > 0
    except (KeyError, TypeError, ValueError):
        return False


def _read_calibration(path: Path) -> dict[str, Any]:
    try:
        stored = atomic.read_json(path) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return stored if isinstance(stored, dict) else {}


def _update_calibration(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Read the calibration file, ``change`` it in place, write it back atomically."""
    stored = _read_calibration(path)
    change(stored)
    try:
        atomic.write_json(path, stored)
    except OSError as exc:  # a read-only cache only costs a re-probe next time
        log.warning("could not store calibration in %s: %s", path, exc)


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
    estimate: Estimate  # at the probes' pace (the re-planned pace is applied when fitting)
    note: str = ""
    changes: dict = field(default_factory=dict)  # {"epochs": 3, "trials": 2}
    expected: float | None = None  # expected validation accuracy as decided (None: not valued)
    rank: int = 0  # place in the value order, 1 = spent on first

    @property
    def dropped(self) -> bool:
        return self.action == "dropped"


@dataclass(frozen=True)
class Worth:
    """What a task is expected to add to the run (``benchmark.plan.value`` builds these).

    ``accuracy`` is the expected validation accuracy, a number or a function of the (possibly
    shortened) estimate, since fewer epochs learn less. ``value`` is ``weight * (accuracy -
    chance)``: accuracy above chance, the k-th repeat of an architecture weighted down (a second
    seed adds less to an ensemble than a first)."""

    accuracy: float | Callable[[Estimate], float]
    chance: float = 0.0
    weight: float = 1.0
    source: str = "guess"  # the figure's basis: benchmark.plan.value.BASES
    detail: str = ""  # where the figure comes from, for --plan

    def expected(self, est: Estimate) -> float:
        return float(self.accuracy(est) if callable(self.accuracy) else self.accuracy)

    def value(self, est: Estimate) -> float:
        return self.weight * max(0.0, self.expected(est) - self.chance)


BEST_TIE = 0.005  # expected accuracies this close count as equal when choosing who goes first
PACE_PRIOR_SECONDS = 30.0  # the pace starts as if this much had run exactly as estimated


@dataclass
class Pace:
    """How fast the run goes against its estimates: real over estimated seconds of the tasks
    trained so far, time-weighted (a long member counts more than a short one) and smoothed
    toward 1.0 by ``PACE_PRIOR_SECONDS`` (one short noisy member cannot swing the plan)."""

    estimated: float = 0.0
    real: float = 0.0

    def add(self, estimated: float, real: float) -> None:
        if estimated > 0 and real > 0:
            self.estimated += estimated
            self.real += real

    @property
    def factor(self) -> float:
        return (self.real + PACE_PRIOR_SECONDS) / (self.estimated + PACE_PRIOR_SECONDS)

    def describe(self) -> str:
        f = self.factor
        if abs(f - 1.0) < 0.05:
            return "running at the probes' pace"
        return (
            f"running {f:.1f}x slower than the probes"
            if f > 1
            else (f"running {1 / f:.1f}x faster than the probes")
        )


def value_order(
    estimates: list[Estimate],
    worths: list[Worth] | None = None,
    requires: list[int | None] | None = None,
) -> list[int]:
    """The order the budget is spent in (indices into ``estimates``).

    Without ``worths``: as given (the profile's order). With them: the task with the best
    expected accuracy first (an ensemble gains most from its best member; among near-equal ones,
    within ``BEST_TIE``, the best value per second), then the rest by value per estimated
    second (expected accuracy above chance, weighted, over seconds), best first. Tasks that cost
    nothing (not estimated, e.g. weights unavailable) come last. A task that ``requires``
    another (a boosting round, its previous round) is never placed before it.
    """
    n = len(estimates)
    if worths is None:
        order = list(range(n))
    else:
        costed = [i for i in range(n) if estimates[i].seconds > 0]

        def density(i: int) -> float:
            return worths[i].value(estimates[i]) / estimates[i].seconds

        order = []
        if costed:
            best = max(worths[i].expected(estimates[i]) for i in costed)
            top = [i for i in costed if worths[i].expected(estimates[i]) >= best - BEST_TIE]
            first = max(top, key=lambda i: (density(i), -i))
            order = [
                first,
                *sorted((i for i in costed if i != first), key=lambda i: (-density(i), i)),
            ]
        order += [i for i in range(n) if estimates[i].seconds <= 0]
    return _after_prerequisites(order, requires) if requires else order


def _after_prerequisites(order: list[int], requires: list[int | None]) -> list[int]:
    placed: set[int] = set()
    waiting: dict[int, list[int]] = {}
    result: list[int] = []

    def place(i: int) -> None:
        result.append(i)
        placed.add(i)
        for j in waiting.pop(i, []):
            place(j)

    for i in order:
        need = requires[i]
        if need is None or need in placed or need not in order:
            place(i)
        else:
            waiting.setdefault(need, []).append(i)
    result += [i for i in order if i not in placed]  # a cycle: left in value order
    return result


def fit_to_budget(
    estimates: list[Estimate],
    budget_seconds: float | None,
    reserve_fraction: float = RESERVE_FRACTION,
    *,
    worths: list[Worth] | None = None,
    labels: list[str] | None = None,
    requires: list[int | None] | None = None,
    pace: float = 1.0,
    order: list[int] | None = None,
) -> list[Decision]:
    """One decision a task: spend the budget in :func:`value_order`, keeping each task that fits,
    shortening one that does not (trials, then trial epochs, then the most epochs that fit) and
    dropping it when even that does not fit. Decisions say why.

    ``pace`` multiplies every estimate (the run so far went that much slower than the probes);
    decisions keep the probes' estimates. ``requires[i]``: the index of a task task ``i`` needs
    (run first and not dropped), or -1 for a task it needs that can no longer run. ``order``:
    spend in this order instead (a re-plan keeps the first plan's value order).
    """
    n = len(estimates)
    labels = labels or [f"task {i + 1}" for i in range(n)]
    if order is None:
        order = value_order(estimates, worths, requires)
    elif requires:
        order = _after_prerequisites(list(order), requires)
    rank = {i: k + 1 for k, i in enumerate(order)}

    def expected(i: int, est: Estimate) -> float | None:
        return worths[i].expected(est) if worths is not None else None

    if budget_seconds is None:
        return [
            Decision("run", e, expected=expected(i, e), rank=rank[i])
            for i, e in enumerate(estimates)
        ]
    left = budget_seconds * (1.0 - reserve_fraction)
    decisions: list[Decision | None] = [None] * n
    kept: list[str] = []
    for i in order:
        est, cost = estimates[i], estimates[i].seconds * pace
        need = requires[i] if requires else None
        if need is not None and (need < 0 or decisions[need] is None or decisions[need].dropped):
            what = labels[need] if need >= 0 else "an earlier task"
            decisions[i] = Decision(
                "dropped",
                est,
                f"needs {what}, which does not run",
                expected=expected(i, est),
                rank=rank[i],
            )
            continue
        if cost <= left:
            decisions[i] = Decision("run", est, expected=expected(i, est), rank=rank[i])
            left -= cost
            kept.append(labels[i])
            continue
        shorter = _shorten(est, left / pace)
        if shorter is not None:
            changes = {
                k: getattr(shorter, k)
                for k in ("trials", "trial_epochs", "epochs")
                if getattr(shorter, k) != getattr(est, k)
            }
            note = "shortened to fit the budget: " + ", ".join(
                f"{k.replace('_', ' ')} {getattr(est, k)} -> {v}" for k, v in changes.items()
            )
            if worths is not None and _pct(expected(i, shorter)) != _pct(expected(i, est)):
                note += (
                    f" (expected {_pct(expected(i, shorter))} instead of {_pct(expected(i, est))})"
                )
            decisions[i] = Decision(
                "shortened", shorter, note, changes, expected=expected(i, shorter), rank=rank[i]
            )
            left -= shorter.seconds * pace
            kept.append(labels[i])
            continue
        if worths is not None and kept:
            names = ", ".join(kept[:3]) + (f" and {len(kept) - 3} more" if len(kept) > 3 else "")
            note = (
                f"expected {_pct(expected(i, est))} for ~{duration(cost)}, lower value than "
                f"{names}; ~{duration(max(left, 0))} of the budget left"
            )
        else:
            note = f"needs ~{duration(cost)}, {duration(max(left, 0))} of the budget left"
        decisions[i] = Decision("dropped", est, note, expected=expected(i, est), rank=rank[i])
    return [d for d in decisions if d is not None]


def _pct(x: float | None) -> str:
    return "?" if x is None else percent(x, 0)


def _shorten(est: Estimate, left: float) -> Estimate | None:
    """``est`` cut to fit ``left`` seconds: fewer trials, then fewer trial epochs, then the most
    epochs that fit (at least 1); None when even that does not fit."""
    candidate = est
    while candidate.trials > 1 and candidate.seconds > left:
        candidate = replace(candidate, trials=candidate.trials - 1)
    while candidate.trial_epochs > 1 and candidate.seconds > left:
        candidate = replace(candidate, trial_epochs=candidate.trial_epochs - 1)
    trains_epochs = candidate.retrain or not candidate.trials
    if (
        candidate.seconds > left
        and candidate.epochs > 1
        and trains_epochs
        and candidate.epoch_seconds > 0
    ):
        base = replace(candidate, epochs=0).seconds
        fit = int((left - base) // candidate.epoch_seconds)
        candidate = replace(candidate, epochs=max(1, min(candidate.epochs - 1, fit)))
    return candidate if candidate.seconds <= left else None
