"""What a member is expected to be worth: the planner's expected validation accuracy of a task.

The budget planner (``benchmark.plan.budget.fit_to_budget``) spends the budget on expected accuracy
per estimated second. Before a member has run on this machine its accuracy comes from a prior;
once a member of the same model and recipe has finished here, what it reached (kept in the
calibration file by the runner) replaces the prior.

The priors live in ``priors.toml`` beside this module, each with its basis: "measured" (a
validation figure in docs/results, checked against that file by tests/test_priors.py),
"reference" (a published figure) or "guess" (a default); an architecture's own registration may
declare one (``extra["reference_accuracy"] = (accuracy, epochs, train_images)``, basis
"declared": how a plugin brings its figure). A member takes the entry that matches its
architecture, strategy, input size and feature options best; one that differs in strategy or
feature options is a "guess" that names the figure it started from; one that differs only in input
size is scaled by ``resolution_beta`` (error ~ size ** -beta).

The curve. With ``c = 1 / classes`` the chance level and ``s = (acc - c) / (1 - c)`` the skill above
chance, the figure's skill is projected with a saturating curve in epochs ``E`` and a power law in
training images ``N``::

    s_inf(N_ref) = min(0.99, s_ref / (1 - exp(-E_ref / tau)))
    s_inf(N)     = 1 - (1 - s_inf(N_ref)) * (N / N_ref) ** -alpha    for N >= N_ref
                 = max(that, s_inf(N_ref) * (N / N_ref) ** alpha)   for N <  N_ref
    acc(E, N)    = c + (1 - c) * s_inf(N) * (1 - exp(-E / tau))

``tau`` (a constant or stepped rate, a schedule that finishes the run, a head on cached features),
``alpha`` (end to end, a head) and ``resolution_beta`` are in ``priors.toml``'s ``[curve]`` with
the validation figures they were fitted to. A tuned member is
valued at its final training length (the trial epochs when the best trial is restored). Priors are
CIFAR-10 figures: on another dataset they rank members, they do not predict them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

from benchmark.plan import budget as budget_mod

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

log = logging.getLogger(__name__)

REFERENCE_KEY = "reference_accuracy"  # registry extra: (val accuracy, epochs, training images)
PRIORS_FILE = "priors.toml"
MAX_SKILL = 0.99
REPEAT_WEIGHT = 0.5  # the k-th repeat of an architecture in a plan is worth REPEAT_WEIGHT ** k
BASES = ("measured", "reference", "declared", "guess", "here")  # "here": an earlier run
FEATURE_KEYS = ("feature_levels", "flip_features")  # feature options a prior can be specific to


@dataclass(frozen=True)
class Reference:
    """A validation accuracy reached after ``epochs`` on ``train_images`` images of a
    ``num_classes``-class problem at ``input_size`` px, what it rests on (``basis``, one of
    :data:`BASES`) and where it comes from (``source``; with ``note``: how the member differs)."""

    accuracy: float
    epochs: float
    train_images: int
    num_classes: int = 10
    basis: str = "guess"
    source: str = ""
    input_size: int | None = None
    note: str = ""

    def describe(self) -> str:
        """One line for ``--plan``: basis, source and any difference from the member."""
        return "; ".join(p for p in (f"{self.basis}: {self.source}", self.note) if p)


@dataclass(frozen=True)
class Prior:
    """One ``[[prior]]`` entry of ``priors.toml``."""

    architecture: str
    strategy: str
    reference: Reference
    options: tuple[tuple[str, Any], ...] = ()  # feature options it is specific to

    def label(self) -> str:
        size = f" @{self.reference.input_size}px" if self.reference.input_size else ""
        opts = ", ".join(f"{k}={v}" for k, v in self.options)
        return f"{self.architecture} {self.strategy}{size}" + (f" ({opts})" if opts else "")


@functools.cache
def _table() -> dict[str, Any]:
    text = resources.files("benchmark.plan").joinpath(PRIORS_FILE).read_text(encoding="utf-8")
    return tomllib.loads(text)


def curve_constant(name: str) -> float:
    """A ``[curve]`` constant of ``priors.toml`` (``tau_epochs``, ``alpha``, ...)."""
    return float(_table()["curve"][name]["value"])


def _source(raw: dict[str, Any]) -> str:
    source = str(raw["source"])
    return f"docs/results/{source}.json" if raw["basis"] == "measured" else source


@functools.cache
def priors() -> tuple[Prior, ...]:
    """Every ``[[prior]]`` of ``priors.toml``."""
    out = []
    for raw in _table()["prior"]:
        ref = Reference(
            float(raw["accuracy"]),
            float(raw["epochs"]),
            int(raw["train_images"]),
            basis=str(raw["basis"]),
            source=_source(raw),
            input_size=int(raw["input_size"]) if "input_size" in raw else None,
        )
        options = tuple((k, raw[k]) for k in FEATURE_KEYS if k in raw)
        out.append(Prior(str(raw["architecture"]), str(raw["strategy"]), ref, options))
    return tuple(out)


def default_reference(kind: str) -> Reference:
    """The ``[default.<kind>]`` guess of ``priors.toml`` (scratch or pretrained)."""
    raw = _table()["default"].get(kind) or _table()["default"]["scratch"]
    return Reference(
        float(raw["accuracy"]),
        float(raw["epochs"]),
        int(raw["train_images"]),
        basis=str(raw["basis"]),
        source=f"default for a {kind if kind in _table()['default'] else 'scratch'} net: "
        + str(raw["source"]),
    )


def _distance(p: Prior, strategy: str, size: int | None, options: dict[str, Any]) -> float:
    """How far ``p`` is from the member: strategy first, then feature options, then size."""
    far = 100.0 if p.strategy != strategy else 0.0
    far += sum(10.0 for k, v in p.options if options.get(k, v) != v)
    ref_size = p.reference.input_size
    if size and ref_size and size != ref_size:
        far += abs(math.log(size / ref_size))
    return far


def _nearest(candidates: list[Prior], strategy: str, size: int | None, options: dict) -> Reference:
    """The best-matching entry, scaled to ``size`` and labelled with how it differs."""
    best = min(candidates, key=lambda p: _distance(p, strategy, size, options))
    ref = best.reference
    differs = best.strategy != strategy or any(options.get(k, v) != v for k, v in best.options)
    if differs:
        return replace(ref, basis="guess", note=f"from the {ref.basis} figure of {best.label()}")
    ref_size = ref.input_size
    if size and ref_size and size != ref_size and strategy != "scratch":
        error = (1.0 - ref.accuracy) * (size / ref_size) ** -curve_constant("resolution_beta")
        return replace(
            ref,
            accuracy=max(0.0, 1.0 - error),
            input_size=size,
            note=f"scaled from {ref_size} px to {size} px (resolution_beta)",
        )
    return ref


def prior(
    architecture: str,
    strategy: str | None = None,
    input_size: int | None = None,
    options: dict[str, Any] | None = None,
) -> Reference:
    """The prior for a member of ``architecture`` trained by ``strategy`` (None: from scratch) at
    ``input_size`` px with transfer ``options``: its own ``priors.toml`` entries, else the figure
    its registration declares, else its family's entries averaged, else its kind's default (an
    unknown or ``member:`` architecture: the pretrained default)."""
    strategy = strategy or "scratch"
    options = dict(options or {})
    own = [p for p in priors() if p.architecture == architecture]
    if own:
        return _nearest(own, strategy, input_size, options)
    try:
        import zoo

        entry = zoo.get(architecture)
    except Exception:  # noqa: BLE001 - e.g. "member:runs/A/members/ID": valued as pretrained
        return default_reference("pretrained")
    declared = _figure(entry.extra.get(REFERENCE_KEY))
    if declared is not None:
        return declared
    known: dict[str, Reference] = {}
    for name in zoo.list_models(family=entry.family):  # e.g. a Lite3 between its relatives
        mine = [p for p in priors() if p.architecture == name]
        ref = (
            _nearest(mine, strategy, input_size, options)
            if mine
            else _figure(zoo.get(name).extra.get(REFERENCE_KEY))
        )
        if ref is not None and name != architecture:
            known[name] = ref
    if known:
        refs = list(known.values())
        return Reference(
            sum(r.accuracy for r in refs) / len(refs),
            sum(r.epochs for r in refs) / len(refs),
            round(sum(r.train_images for r in refs) / len(refs)),
            basis="guess",
            source=f"the average of its family's figures ({', '.join(sorted(known))})",
            input_size=input_size,
        )
    return default_reference(entry.kind)


def reference(architecture: str) -> Reference:
    """The prior for ``architecture`` trained from scratch (or, for a backbone, at its own
    entries' best match): :func:`prior` with no member details."""
    return prior(architecture)


def _figure(raw: Any) -> Reference | None:
    try:
        accuracy, epochs, images = (float(v) for v in raw)
    except (TypeError, ValueError):
        return None
    if not (0 < accuracy <= 1 and epochs > 0):
        return None
    return Reference(
        accuracy, epochs, int(images), basis="declared", source="the architecture's registration"
    )


def curve(
    ref: Reference,
    epochs: float,
    train_images: int,
    num_classes: int,
    tau: float,
    alpha: float | None = None,
) -> float:
    """Expected accuracy after ``epochs`` on ``train_images`` images (the module's formula)."""
    alpha = curve_constant("alpha") if alpha is None else alpha
    ref_chance = 1.0 / max(ref.num_classes, 2)
    skill = max(0.0, (ref.accuracy - ref_chance) / (1.0 - ref_chance))
    ceiling = min(MAX_SKILL, skill / (1.0 - math.exp(-ref.epochs / tau)))
    ratio = max(train_images, 1) / max(ref.train_images, 1)
    # the error left ~ images ** -alpha either way; fewer images: never below the skill law
    # ceiling * ratio ** alpha, which keeps a tiny set above chance (docs/results/prior-curve.json)
    error_law = 1.0 - (1.0 - ceiling) * ratio**-alpha
    ceiling = error_law if ratio >= 1 else max(error_law, ceiling * ratio**alpha)
    chance = 1.0 / max(num_classes, 2)
    return chance + (1.0 - chance) * ceiling * (1.0 - math.exp(-max(epochs, 0.0) / tau))


def final_epochs(task, est: budget_mod.Estimate | None = None) -> float:
    """The epochs the member's model ends up trained for (a restored trial: the trial's)."""
    if est is not None:
        trains = est.retrain or not est.trials
        return float(est.epochs if trains else est.trial_epochs)
    if task.tune is not None and task.tune.get("restore"):
        return float(task.tune["epochs"])
    return float(task.training["epochs"])


def recipe_key(task, data) -> str:
    """What changes a member's accuracy besides its model and its length: an earlier run's figure
    is reused only for the same recipe (dataset, training settings, augmentation, ...)."""
    spec = task.spec
    recipe = {
        "dataset": getattr(data, "name", ""),
        "classes": int(data.num_classes),
        "training": {k: v for k, v in spec.training.items() if k != "epochs"},
        "augment": spec.augment,
        "preprocess": spec.preprocess,
        "input_size": spec.input_size,
        "transfer": spec.transfer_options if spec.strategy else {},
        "tuned": task.tune is not None,
        "resampled": task.bootstrap is not None or task.boost is not None,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]


def member_size(spec) -> int | None:
    """The input size a backbone member computes at (its own, its hp's, else its architecture's);
    None for a from-scratch net (it takes the data's size)."""
    if spec.strategy is None:
        return None
    size = spec.input_size or spec.hp.get("input_size")
    if size:
        return int(size)
    try:
        import zoo

        return int(zoo.get(spec.architecture).input_size)
    except Exception:  # noqa: BLE001 - an architecture not installed here: no size to scale by
        return None


def task_reference(task, data) -> Reference:
    """An earlier run's figure for this model and recipe on this machine, else the prior."""
    if task.probe_spec is not None:
        try:
            seen = budget_mod.observed_accuracy(task.probe_spec, recipe_key(task, data))
        except Exception as exc:  # noqa: BLE001 - a prior is always there to fall back on
            log.debug("no earlier-run accuracy for %s: %s", task.label, exc)
            seen = None
        if seen is not None:
            return Reference(
                float(seen["val_accuracy"]),
                float(seen["epochs"]),
                int(seen.get("train_images") or len(data.y_train)),
                int(seen.get("num_classes") or data.num_classes),
                basis="here",
                source="an earlier run of this model and recipe on this machine",
            )
    spec = task.spec
    options = spec.transfer_options if spec.strategy == "feature-extraction" else {}
    return prior(spec.architecture, spec.strategy, member_size(spec), options)


def expected_accuracy(task, data, est: budget_mod.Estimate | None = None) -> tuple[float, str]:
    """(expected validation accuracy of ``task`` on ``data``, the figure's basis: one of
    :data:`BASES`), for the task as asked or, with ``est``, as the plan would shorten it."""
    ref = task_reference(task, data)
    return _accuracy(task, data, ref, est), ref.basis


# Schedules that end the run wherever it ends (the rate falls to near zero by the last step): a
# shorter run still finishes, so it loses less than a constant rate cut short.
FINISHING_SCHEDULES = ("triangle", "one-cycle", "cosine")


def tau_for(task) -> float:
    """The curve's epochs-to-63% for ``task``: a head on cached features, a finishing schedule, or
    end-to-end training at a constant or stepped rate (``priors.toml``'s ``[curve]``)."""
    if task.spec.strategy == "feature-extraction":
        return curve_constant("tau_head_epochs")
    if task.training.get("schedule") in FINISHING_SCHEDULES:
        return curve_constant("tau_finishing_epochs")
    return curve_constant("tau_epochs")


def _accuracy(task, data, ref: Reference, est: budget_mod.Estimate | None) -> float:
    head = task.spec.strategy == "feature-extraction"
    tau = tau_for(task)
    alpha = curve_constant("alpha_head" if head else "alpha")
    return curve(ref, final_epochs(task, est), len(data.y_train), data.num_classes, tau, alpha)


def worths(tasks: list, data) -> list[budget_mod.Worth]:
    """Each task's :class:`benchmark.plan.budget.Worth`: its expected accuracy as a function of its
    (shortened) estimate, chance, and ``REPEAT_WEIGHT ** k`` for the k-th earlier task of the
    same architecture and strategy in the profile (seeds, bagging, boosting rounds, a second
    member of the same net: an ensemble gains less from a copy than from a different net)."""
    seen: dict[tuple[str, str | None], int] = {}
    out: list[budget_mod.Worth | None] = [None] * len(tasks)
    for k in sorted(range(len(tasks)), key=lambda k: (tasks[k].order, k)):
        task = tasks[k]
        key = (task.spec.architecture, task.spec.strategy)
        repeats = seen.get(key, 0)
        seen[key] = repeats + 1
        ref = task_reference(task, data)
        out[k] = budget_mod.Worth(
            accuracy=lambda est, t=task, r=ref: _accuracy(t, data, r, est),
            chance=1.0 / max(data.num_classes, 2),
            weight=REPEAT_WEIGHT**repeats,
            source=ref.basis,
            detail=ref.describe(),
        )
    return [w for w in out if w is not None]
