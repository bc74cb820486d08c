"""The plan: a profile's members as tasks, each costed on this machine and fitted to the budget.

``zoobench run --plan`` needs only this module (and the data, for the probes); the runner then
carries out what it decided.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from benchmark import budget as budget_mod
from benchmark import hpspace
from benchmark.errors import short_error
from benchmark.formatting import duration
from benchmark.profiles import MemberSpec, Profile

log = logging.getLogger(__name__)


@dataclass
class Task:
    """One line of the plan: a member to train (or a search whose best trials become members)."""

    spec: MemberSpec
    label: str
    seed: int
    bootstrap: dict | None = None
    group: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    tune: dict[str, Any] | None = None
    decision: budget_mod.Decision | None = None
    note: str = ""  # e.g. "weights unavailable"

    @property
    def tuned(self) -> bool:
        return self.tune is not None

    @property
    def dropped(self) -> bool:
        return self.decision is not None and self.decision.action == "dropped"


def expand(profile: Profile, seed: int) -> list[Task]:
    """The profile's members as tasks: one per seed / bootstrap resample / search."""
    tasks = []
    for spec in profile.members:
        training = dict(spec.training)
        if spec.tune is not None:
            tasks.append(Task(spec, spec.name, seed, training=training, tune=dict(spec.tune)))
        elif spec.bagging:
            tasks += [
                Task(spec, f"{spec.name} [bag {k}]", seed, bootstrap={"seed": k},
                     group=f"bagging:{spec.name}", training=dict(training))  # fmt: skip
                for k in range(spec.bagging)
            ]
        elif spec.seeds > 1:
            tasks += [
                Task(spec, f"{spec.name} [seed {seed + k}]", seed + k, group=f"seeds:{spec.name}",
                     training=dict(training))  # fmt: skip
                for k in range(spec.seeds)
            ]
        else:
            tasks.append(Task(spec, spec.name, seed, training=training))
    return tasks


def estimate(task: Task, data) -> budget_mod.Estimate:
    """Seconds ``task`` should take here, from a timed probe of its model (calibrated once)."""
    import zoo
    from benchmark.tuning import fixed_hyperparameters

    spec, d = task.spec, data
    # pretrained backbones take the data's pixels and resize to hp's input_size inside
    hp, shape = hpspace.build_inputs(spec, d.input_shape)
    batch = int(task.training["batch_size"])
    probe_spec = {"architecture": spec.architecture, "hp": hp, "shape": list(shape),
                  "batch": batch, "strategy": spec.strategy}  # fmt: skip

    def factory():
        built = fixed_hyperparameters(hp)
        model = zoo.build(spec.architecture, built, shape, d.num_classes)
        # the space this build declared: the hp check reads it instead of building again
        hpspace.remember(hpspace.space_key(spec.architecture, hp, shape, d.num_classes), built)
        return model

    tp = budget_mod.probe(factory, shape, d.num_classes, min(batch, 64), probe_spec)
    n_train, n_val, n_test = len(d.y_train), len(d.y_val), len(d.y_test)
    predict = (n_val + n_test) / tp.infer
    fixed = budget_mod.STARTUP_SECONDS + tp.build_seconds + predict
    if spec.strategy == "feature-extraction":  # one pass over everything, then head trials
        epoch = 0.05 * n_train / tp.infer
        options = spec.transfer_options
        views = 2 if options["flip_features"] else 1  # images and their mirrors
        fixed += (
            views * (n_train + n_val + n_test) / tp.infer
            + int(options["head_trials"]) * budget_mod.STARTUP_SECONDS
        )
    else:
        epoch = n_train / tp.train + n_val / tp.infer
    epochs = int(task.training["epochs"])
    if task.tuned:
        from benchmark.tuning import trial_epochs

        schedule, most = trial_epochs(task.tune), int(task.tune["epochs"])
        return budget_mod.Estimate(
            epoch, fixed, epochs, trials=len(schedule), trial_epochs=most,
            trial_epoch_share=sum(schedule) / max(len(schedule) * most, 1),
            retrain=not task.tune["restore"],
        )  # fmt: skip
    return budget_mod.Estimate(epoch, fixed, epochs)


def make_plan(profile: Profile, data, seed: int, remaining: float | None, probe: bool) -> list[Task]:
    """Expand the profile and, with ``probe``, fit it to ``remaining`` seconds (None: no budget).

    Every member's hp is checked against its architecture's space either way
    (``benchmark.hpspace``): a typo or a value out of range is a ZoobenchError before any training.
    """
    tasks = expand(profile, seed)
    if not probe:
        check_members(profile, data)
        return tasks
    estimates = []
    checked: set[int] = set()
    for task in tasks:
        try:
            estimates.append(estimate(task, data))
        except Exception as exc:  # noqa: BLE001 - e.g. pretrained weights unavailable offline
            task.note = short_error(exc)
            estimates.append(budget_mod.Estimate(0.0, 0.0, 0))
        if id(task.spec) not in checked:  # on the probe's build when it built one
            checked.add(id(task.spec))
            hpspace.check_spec(task.spec, data.input_shape, data.num_classes)
    for task, decision in zip(tasks, budget_mod.fit_to_budget(estimates, remaining), strict=True):
        task.decision = decision
        _apply(task, decision)
    return tasks


def check_members(profile: Profile, data) -> None:
    """Every member's hp against its architecture's space (``benchmark.hpspace``), no probe: a
    ZoobenchError naming the member, the key and what is allowed. Spaces are remembered, so the
    plan's own check after this builds nothing again."""
    for spec in profile.members:
        hpspace.check_spec(spec, data.input_shape, data.num_classes)


def describe(tasks: list[Task], budget_seconds: float | None) -> list[str]:
    """The plan as the console prints it: one line a task, then the estimated total."""
    lines = []
    total = 0.0
    for i, task in enumerate(tasks, 1):
        what = "tune " + tune_summary(task.tune) if task.tuned else f"{task.training['epochs']} epochs"
        est = ""
        if task.decision is not None and not task.note:
            est = f"~{duration(task.decision.estimate.seconds)}"
            if not task.dropped:
                total += task.decision.estimate.seconds
        action = task.decision.action if task.decision else "run"
        note = task.note or (task.decision.note if task.decision else "")
        lines.append(f"{i:>3}. {task.label:<45} {what:<32} {est:>8}  {action}"
                     + (f" ({note})" if note else ""))  # fmt: skip
    if any(t.decision for t in tasks):
        budget = f", budget {duration(budget_seconds)}" if budget_seconds else ""
        lines.append(f"     estimated total ~{duration(total)} on this machine{budget}")
    return lines


def tune_summary(tune: dict) -> str:
    return f"{tune['algorithm']} x{tune['max_trials']} ({tune['epochs']} ep)"


def _apply(task: Task, decision: budget_mod.Decision) -> None:
    changes = decision.changes
    if "epochs" in changes:
        task.training["epochs"] = changes["epochs"]
    if task.tune is not None:
        if "trials" in changes:
            task.tune["max_trials"] = changes["trials"]
            task.tune["top_k"] = min(task.tune["top_k"], changes["trials"])
        if "trial_epochs" in changes:
            task.tune["epochs"] = changes["trial_epochs"]
