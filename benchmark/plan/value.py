"""What a member is expected to be worth: the planner's expected validation accuracy of a task.

The budget planner (``benchmark.plan.budget.fit_to_budget``) spends the budget on expected accuracy
per estimated second. Before a member has run on this machine its accuracy comes from a prior;
once a member of the same model and recipe has finished here, what it reached (kept in the
calibration file by the runner) replaces the prior.

The prior. Each architecture has a reference: the validation accuracy it reached after a number
of epochs on a number of training images (``extra["reference_accuracy"] = (accuracy, epochs,
train_images)`` on its registry entry, from measured runs on CIFAR-10 in docs/results; without one,
its family's averaged, else its kind's default below). With ``c = 1 / classes`` the chance level and
``s = (acc - c) / (1 - c)`` the skill above chance, the reference's skill is projected with a
saturating curve in epochs ``E`` and a power law in training images ``N``::

    s_inf(N_ref) = min(0.99, s_ref / (1 - exp(-E_ref / tau)))
    s_inf(N)     = 1 - (1 - s_inf(N_ref)) * (N / N_ref) ** -alpha    for N >= N_ref
                 = s_inf(N_ref) * (N / N_ref) ** alpha              for N <  N_ref
    acc(E, N)    = c + (1 - c) * s_inf(N) * (1 - exp(-E / tau))

``tau`` is 3 epochs for networks trained end to end and 2 for a head on cached features;
``alpha`` is 0.25 (Lite0 features: 78% test on 10k images, docs/results/cpu-tour-dbb660a.json; 85%
on 45k, docs/results/feature-extraction-lite0.json). Both fit the measured figures within a point
(resnet20: 0.377 predicted at 2 epochs from its 8-epoch figure, 0.384 measured; fastnet: 0.605 at
5.2 epochs from its 10-epoch figure, 0.596 measured; docs/results/zoo-accuracy-per-cpu-second.json).
A tuned member is valued at its final training length (the trial epochs when the best trial is
restored).
Priors are CIFAR-10 figures: on another dataset they rank members, they do not predict them.

Cached-feature members are favoured twice: pretrained backbones' priors are high (their features
carry ImageNet), and the planner spends the budget on the best-expected member first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from typing import Any

from benchmark.plan import budget as budget_mod

log = logging.getLogger(__name__)

REFERENCE_KEY = "reference_accuracy"  # registry extra: (val accuracy, epochs, training images)
TAU_EPOCHS = 3.0  # epochs to 63% of the reachable skill, end-to-end training
TAU_HEAD_EPOCHS = 2.0  # the same for a head trained on cached features
ALPHA = 0.25  # error above the curve's ceiling ~ training images ** -ALPHA
MAX_SKILL = 0.99
REPEAT_WEIGHT = 0.5  # the k-th repeat of an architecture in a plan is worth REPEAT_WEIGHT ** k
# (accuracy, epochs, training images) on CIFAR-10 for an architecture with no figure of its own
DEFAULT_REFERENCE = {"scratch": (0.55, 8, 10_000), "pretrained": (0.75, 20, 10_000)}


@dataclass(frozen=True)
class Reference:
    """A validation accuracy reached after ``epochs`` on ``train_images`` images of a
    ``num_classes``-class problem, and where the figure comes from."""

    accuracy: float
    epochs: float
    train_images: int
    num_classes: int = 10
    source: str = "prior"  # "prior" | "earlier run"


def reference(architecture: str) -> Reference:
    """The registry's figure for ``architecture``, else its family's figures averaged, else its
    kind's default (an unknown or ``member:`` architecture: the pretrained default)."""
    try:
        import zoo

        entry = zoo.get(architecture)
    except Exception:  # noqa: BLE001 - e.g. "member:runs/A/members/ID": valued as pretrained
        return Reference(*DEFAULT_REFERENCE["pretrained"])
    own = _figure(entry.extra.get(REFERENCE_KEY))
    if own is not None:
        return own
    family = [
        _figure(zoo.get(n).extra.get(REFERENCE_KEY)) for n in zoo.list_models(family=entry.family)
    ]
    known = [f for f in family if f is not None]
    if known:  # e.g. Lite1 between Lite0 and Lite2
        return Reference(
            sum(f.accuracy for f in known) / len(known),
            sum(f.epochs for f in known) / len(known),
            round(sum(f.train_images for f in known) / len(known)),
        )
    return Reference(*DEFAULT_REFERENCE.get(entry.kind, DEFAULT_REFERENCE["scratch"]))


def _figure(raw: Any) -> Reference | None:
    try:
        accuracy, epochs, images = (float(v) for v in raw)
    except (TypeError, ValueError):
        return None
    return Reference(accuracy, epochs, int(images)) if 0 < accuracy <= 1 and epochs > 0 else None


def curve(ref: Reference, epochs: float, train_images: int, num_classes: int, tau: float) -> float:
    """Expected accuracy after ``epochs`` on ``train_images`` images (the module's formula)."""
    ref_chance = 1.0 / max(ref.num_classes, 2)
    skill = max(0.0, (ref.accuracy - ref_chance) / (1.0 - ref_chance))
    ceiling = min(MAX_SKILL, skill / (1.0 - math.exp(-ref.epochs / tau)))
    ratio = max(train_images, 1) / max(ref.train_images, 1)
    # more data: the error left shrinks; less: the skill shrinks (never below chance)
    ceiling = 1.0 - (1.0 - ceiling) * ratio**-ALPHA if ratio >= 1 else ceiling * ratio**ALPHA
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
                "earlier run",
            )
    return reference(task.spec.architecture)


def expected_accuracy(task, data, est: budget_mod.Estimate | None = None) -> tuple[float, str]:
    """(expected validation accuracy of ``task`` on ``data``, "prior" or "earlier run"), for
    the task as asked or, with ``est``, as the plan would shorten it."""
    ref = task_reference(task, data)
    return _accuracy(task, data, ref, est), ref.source


def _accuracy(task, data, ref: Reference, est: budget_mod.Estimate | None) -> float:
    tau = TAU_HEAD_EPOCHS if task.spec.strategy == "feature-extraction" else TAU_EPOCHS
    return curve(ref, final_epochs(task, est), len(data.y_train), data.num_classes, tau)


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
            source=ref.source,
        )
    return [w for w in out if w is not None]
