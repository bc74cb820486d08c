"""The plan: a profile's members as tasks, each costed on this machine, valued (expected
accuracy, ``benchmark.plan.value``) and fitted to the budget by value.

``zoobench run --plan`` needs only this module (and the data, for the probes); the runner then
carries out what it decided, telling a :class:`Replanner` after each task how long it really took,
so the rest is re-fitted at the run's real pace.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from benchmark.config.profiles import MemberSpec, Profile
from benchmark.errors import short_error
from benchmark.formatting import duration, percent
from benchmark.plan import budget as budget_mod
from benchmark.plan import costmodel
from benchmark.train import extraction
from benchmark.tune import hpspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Boost:
    """Which SAMME round of how many a task trains (round 0 first; round k needs 0..k-1)."""

    round: int
    rounds: int


@dataclass
class Task:
    """One line of the plan: a member to train (or a search whose best trials become members)."""

    spec: MemberSpec
    label: str
    seed: int
    bootstrap: dict | None = None
    boost: Boost | None = None  # a boosting round (benchmark.train.boosting)
    group: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    tune: dict[str, Any] | None = None
    decision: budget_mod.Decision | None = None
    note: str = ""  # e.g. "weights unavailable"
    order: int = 0  # place in the profile (the run goes in value order; see make_plan)
    probe_spec: dict[str, Any] | None = None  # its calibration key's spec (budget.probe)
    estimate: budget_mod.Estimate | None = None  # the task as the profile asks, probes' pace
    worth: budget_mod.Worth | None = None  # expected accuracy (benchmark.plan.value)
    asked: dict[str, Any] = field(default_factory=dict)  # training/tune before any shortening
    probed_under_load: bool = False  # its cost comes from a probe other processes slowed
    cost_source: str = ""  # "probe" | "live" | "flops" (benchmark.plan.costmodel)

    @property
    def tuned(self) -> bool:
        return self.tune is not None

    @property
    def dropped(self) -> bool:
        return self.decision is not None and self.decision.action == "dropped"


def expand(profile: Profile, seed: int) -> list[Task]:
    """The profile's members as tasks: one per seed / bootstrap resample / boosting round / search."""
    tasks = []
    for spec in profile.members:
        training = dict(spec.training)
        if spec.tune is not None:
            tasks.append(Task(spec, spec.name, seed, training=training, tune=dict(spec.tune)))
        elif spec.bagging:
            tasks += [
                Task(
                    spec,
                    f"{spec.name} [bag {k}]",
                    seed,
                    bootstrap={"seed": k},
                    group=f"bagging:{spec.name}",
                    training=dict(training),
                )
                for k in range(spec.bagging)
            ]
        elif spec.boosting:  # rounds in order: round k's weights come from rounds 0..k-1
            tasks += [
                Task(
                    spec,
                    f"{spec.name} [boost {k}]",
                    seed,
                    boost=Boost(k, spec.boosting),
                    group=f"boosting:{spec.name}",
                    training=dict(training),
                )
                for k in range(spec.boosting)
            ]
        elif spec.seeds > 1:
            tasks += [
                Task(
                    spec,
                    f"{spec.name} [seed {seed + k}]",
                    seed + k,
                    group=f"seeds:{spec.name}",
                    training=dict(training),
                )
                for k in range(spec.seeds)
            ]
        else:
            tasks.append(Task(spec, spec.name, seed, training=training))
    for k, task in enumerate(tasks):
        task.order = k
    return tasks


def probe_spec(task: Task, data) -> dict[str, Any]:
    """What a task's probe measures (its calibration key): model, hp, input shape, batch."""
    spec = task.spec
    hp, shape = hpspace.build_inputs(spec, data.input_shape)
    batch = int(task.training["batch_size"])
    return {
        "architecture": spec.architecture,
        "hp": hp,
        "shape": list(shape),
        "batch": batch,
        "strategy": spec.strategy,
    }


# Head training on cached features, rows per second: 90,000 rows of 1,984 features through a
# 256-unit head in 4.0 s an epoch on 2 CPU cores (docs/results/feature-extraction-lite0.json).
HEAD_ROWS_PER_SECOND = 22_500


def estimate(task: Task, data, costing: str = "probe") -> budget_mod.Estimate:
    """Seconds ``task`` should take here: from a timed probe of its model (calibrated once), or
    with ``costing`` "flops" (or "auto" on an accelerator) from its FLOPs and the device's rate
    (``benchmark.plan.costmodel``), which compiles no member."""
    import zoo
    from benchmark.tune.tuning import fixed_hyperparameters
    from zoo.record_layers import view_count

    spec, d = task.spec, data
    # pretrained backbones take the data's pixels and resize to hp's input_size inside
    hp, shape = hpspace.build_inputs(spec, d.input_shape)
    batch = int(task.training["batch_size"])
    task.probe_spec = probe_spec(task, d)

    def factory():
        built = fixed_hyperparameters(hp)
        model = zoo.build(spec.architecture, built, shape, d.num_classes)
        # the space this build declared: the hp check reads it instead of building again
        hpspace.remember(hpspace.space_key(spec.architecture, hp, shape, d.num_classes), built)
        return model

    if costmodel.use_flops(costing):  # FLOPs over the device's rate: no member compiled
        from benchmark.train.training import resolve_precision

        # a pretrained member trains under its precision only by a recipe (transfer.fit_pretrained)
        by_policy = spec.strategy is None or bool(task.training.get("recipe"))
        policy = resolve_precision(
            task.training.get("precision", "float32") if by_policy else "float32"
        )
        tp = costmodel.throughput(task.probe_spec, factory, batch, policy)
    else:
        tp = budget_mod.probe(factory, shape, d.num_classes, min(batch, 64), task.probe_spec)
    task.probed_under_load = tp.loaded and tp.source != "flops"
    task.cost_source = tp.source
    n_train, n_val, n_test = len(d.y_train), len(d.y_val), len(d.y_test)
    fixed = budget_mod.STARTUP_SECONDS + tp.build_seconds
    if spec.strategy == "feature-extraction":  # one backbone pass over everything, then heads
        options = spec.transfer_options
        views = 2 if options["flip_features"] else 1  # images and their mirrors
        runtime = extraction.resolve(options["extract_runtime"])  # ONNX Runtime runs ~2x TF
        fixed += (
            views * (n_train + n_val + n_test) / (tp.infer * extraction.SPEEDUP[runtime])
            + extraction.SETUP_SECONDS[runtime]
            + int(options["head_trials"]) * budget_mod.STARTUP_SECONDS
        )
        # an "epoch" is one epoch of every head trial on the cached training rows (the best
        # trial's head is kept); val and test probabilities come from the cached features
        epoch = int(options["head_trials"]) * views * n_train / HEAD_ROWS_PER_SECOND
    else:  # the stored predictions go through the member's test-time views (one pass each)
        views = view_count(task.training.get("tta", "none"))
        fixed += views * (n_val + n_test) / tp.infer
        epoch = n_train / tp.train + n_val / tp.infer
    if task.boost is not None:  # a round also predicts the training split (SAMME's error)
        fixed += n_train / tp.infer
    epochs = int(task.training["epochs"])
    if task.tuned:
        from benchmark.tune.tuning import trial_epochs

        schedule, most = trial_epochs(task.tune), int(task.tune["epochs"])
        return budget_mod.Estimate(
            epoch,
            fixed,
            epochs,
            trials=len(schedule),
            trial_epochs=most,
            trial_epoch_share=sum(schedule) / max(len(schedule) * most, 1),
            retrain=not task.tune["restore"],
        )
    return budget_mod.Estimate(epoch, fixed, epochs)


def make_plan(
    profile: Profile, data, seed: int, remaining: float | None, probe: bool, slots: int = 1
) -> list[Task]:
    """Expand the profile and, with ``probe``, fit it to ``remaining`` seconds (None: no budget).

    With ``probe`` each task is costed and valued (``benchmark.plan.value``), the budget is spent in
    value order (``budget.fit_to_budget``) and the tasks come back in run order: the kept ones
    in value order (the best expected member first, so a slow machine still gets it), then the
    dropped ones (which re-planning may re-add). Member IDs and resume do not depend on the
    order. Without ``probe``: the profile's order, nothing decided. With ``slots`` > 1 (a Ray
    cluster's parallel slots) ``remaining`` is the wall time of the run: see :func:`fit`.

    Every member's hp is checked against its architecture's space either way
    (``benchmark.tune.hpspace``): a typo or a value out of range is a ZoobenchError before any training.
    """
    tasks = expand(profile, seed)
    if not probe:
        check_members(profile, data)
        return tasks
    estimates = []
    checked: set[int] = set()
    for task in tasks:
        try:
            estimates.append(estimate(task, data, profile.costing))
        except Exception as exc:  # noqa: BLE001 - e.g. pretrained weights unavailable offline
            task.note = short_error(exc)
            estimates.append(budget_mod.Estimate(0.0, 0.0, 0))
        if id(task.spec) not in checked:  # on the probe's build when it built one
            checked.add(id(task.spec))
            hpspace.check_spec(task.spec, data.input_shape, data.num_classes)
    from benchmark.plan import value

    for task, est in zip(tasks, estimates, strict=True):
        task.estimate = est
    for task, worth in zip(tasks, value.worths(tasks, data), strict=True):
        task.worth = worth
    return fit(tasks, remaining, slots)


# Packing into slots: at most this many re-fits with less work before the plan is taken as it is.
PACK_REFITS = 6


def fit(tasks: list[Task], remaining: float | None, slots: int = 1) -> list[Task]:
    """Decide every costed and valued task (``task.estimate``, ``task.worth``) against
    ``remaining`` seconds by value, make each as long as decided, and return them in run order.

    With ``slots`` > 1 the budget is wall time: the tasks are fitted to ``slots x remaining``
    seconds of work, packed (``benchmark.plan.packing``), and fitted again to less work while the
    packing's wall time is over what one slot could do alone in ``remaining``."""
    if slots <= 1 or remaining is None:
        return _fit_once(tasks, remaining)
    from benchmark.plan import packing

    target = remaining * (1.0 - budget_mod.RESERVE_FRACTION)
    work = remaining * slots
    for _ in range(PACK_REFITS):
        ordered = _fit_once(tasks, work)
        span = packing.pack(ordered, slots).makespan
        if span <= target or span <= 0:
            break
        work *= 0.98 * target / span
    return ordered


def _fit_once(tasks: list[Task], remaining: float | None) -> list[Task]:
    for task in tasks:  # what the profile asked, once: a re-fit for the packing starts from it
        task.asked = task.asked or {
            "training": dict(task.training),
            "tune": dict(task.tune) if task.tune is not None else None,
        }
    worths = [t.worth for t in tasks]
    decisions = budget_mod.fit_to_budget(
        [t.estimate or budget_mod.Estimate(0.0, 0.0, 0) for t in tasks],
        remaining,
        worths=worths if all(w is not None for w in worths) else None,
        labels=[t.label for t in tasks],
        requires=_requires(tasks),
    )
    for task, decision in zip(tasks, decisions, strict=True):
        task.decision = decision
        _apply(task, decision)
    return run_order(tasks)


def run_order(tasks: list[Task]) -> list[Task]:
    """Kept tasks in value order, then dropped ones (value order too); undecided: as given."""
    if not all(t.decision is not None for t in tasks):
        return list(tasks)
    return sorted(tasks, key=lambda t: (t.dropped, t.decision.rank, t.order))


def _requires(tasks: list[Task], start: int = 0) -> list[int | None]:
    """For each of ``tasks[start:]``, the index (in that slice) of the task it needs first: a
    boosting round needs the previous round. -1: that round is behind and did not run."""
    ahead = tasks[start:]
    where = {(t.group, t.boost.round): k for k, t in enumerate(ahead) if t.boost is not None}
    behind = {(t.group, t.boost.round): t for t in tasks[:start] if t.boost is not None}
    needs: list[int | None] = []
    for t in ahead:
        if t.boost is None or t.boost.round == 0:
            needs.append(None)
            continue
        key = (t.group, t.boost.round - 1)
        if key in where:
            needs.append(where[key])
        else:
            previous = behind.get(key)
            needs.append(None if previous is not None and not previous.dropped else -1)
    return needs


def check_members(profile: Profile, data) -> None:
    """Every member's hp against its architecture's space (``benchmark.tune.hpspace``), no probe: a
    ZoobenchError naming the member, the key and what is allowed. Spaces are remembered, so the
    plan's own check after this builds nothing again."""
    for spec in profile.members:
        hpspace.check_spec(spec, data.input_shape, data.num_classes)


def describe(tasks: list[Task], budget_seconds: float | None, slots: int = 1) -> list[str]:
    """The plan as the console prints it: one line a task in run order (its length, estimated
    time, expected validation accuracy and where that figure comes from, its place in the value
    order, what the plan does with it), then the estimated total and how the order was chosen;
    with ``slots`` > 1 (a Ray cluster) also how the tasks pack into them."""
    lines = []
    total = 0.0
    valued = any(t.decision is not None and t.decision.expected is not None for t in tasks)
    for i, task in enumerate(tasks, 1):
        what = (
            "tune " + tune_summary(task.tune)
            if task.tuned
            else epochs_text(task.training["epochs"])
        )
        est = ""
        if task.decision is not None and not task.note:
            est = f"~{duration(task.decision.estimate.seconds)}"
            if not task.dropped:
                total += task.decision.estimate.seconds
        worth = ""
        if valued:
            d, shown = task.decision, ""
            if d is not None and d.expected is not None and not task.note:
                source = task.worth.source if task.worth is not None else "guess"
                shown = f"{percent(d.expected, 1):>6} {source:<9} #{d.rank}"
            worth = f"{shown:<22}  "
        action = task.decision.action if task.decision else "run"
        note = task.note or (task.decision.note if task.decision else "")
        lines.append(
            f"{i:>3}. {task.label:<45} {what:<32} {est:>8}  {worth}{action}"
            + (f" ({note})" if note else "")
        )
    if any(t.decision for t in tasks):
        budget = f", budget {duration(budget_seconds)}" if budget_seconds else ""
        lines.append(f"     estimated total ~{duration(total)} on this machine{budget}")
        if slots > 1:
            from benchmark.plan import packing

            lines += packing.pack(tasks, slots).describe()
    flops = sum(1 for t in tasks if t.cost_source == "flops")
    if flops:
        lines.append(
            f"     {flops} of {len(tasks)} estimates come from the members' FLOPs over this "
            "device's calibrated rate (no member compiled); the run corrects them by its epochs"
        )
    loaded = sum(1 for t in tasks if t.probed_under_load)
    if loaded:
        lines.append(
            f"     {loaded} of {len(tasks)} estimates come from probes taken while other "
            "processes used the cores: the run re-plans at its real pace, and a quiet "
            "machine probes them again"
        )
    if valued:
        lines.append(
            "     expected val accuracy, by what it rests on: measured (a validation figure in "
            "docs/results), reference (a published figure), declared (by the architecture's "
            "registration), guess (no measurement), here (an earlier run on this machine); "
            "#: value order (the best expected first, then accuracy above chance per second)"
        )
        details = {}
        for task in tasks:
            if task.worth is not None and task.worth.detail and not task.note:
                details.setdefault(task.worth.detail, []).append(task.label)
        for detail, labels in details.items():
            lines.append(f"       {', '.join(labels)}: {detail}")
    return lines


def progress_note(tasks: list[Task], done: int, seconds: float) -> str:
    """Where the run stands against its plan after ``done`` tasks took ``seconds``: the share of
    the planned time behind it, the ETA of the rest at the pace so far, and how far off the plan
    that pace is ("" without estimates: a run without a budget is not costed)."""
    costed = [
        (i, t.decision.estimate.seconds)
        for i, t in enumerate(tasks)
        if t.decision is not None and not t.dropped and not t.note
    ]
    total = sum(s for _, s in costed)
    if total <= 0:
        return ""
    behind = sum(s for i, s in costed if i < done)
    ahead = total - behind
    if behind <= 0 or seconds <= 0:
        return f"plan 0% done, ETA ~{duration(ahead)}"
    pace = seconds / behind
    off = (pace - 1.0) * 100
    how = (
        "on plan"
        if abs(off) < 5
        else f"{abs(off):.0f}% {'slower' if off > 0 else 'faster'} than planned"
    )
    return f"plan {100 * behind / total:.0f}% done, ETA ~{duration(ahead * pace)} ({how})"


REPLAN_SLACK = 0.10  # re-fit for more only when the plan leaves this share of the time unused


def replan(tasks: list[Task], start: int, pace: float, available: float) -> list[str]:
    """Re-fit ``tasks[start:]`` (not started yet) to ``available`` seconds at ``pace`` (real over
    estimated seconds so far), in the first plan's value order: shorten or drop when the rest no
    longer fits; lengthen or re-add what was cut when the run goes fast enough to leave
    ``REPLAN_SLACK`` of the time unused. Changes the tasks in place; one phrase per change
    ("resnet20 shortened to 4 epochs", "seed_cnn [seed 1] dropped", "fastnet re-added")."""
    ahead = [
        t for t in tasks[start:] if t.estimate is not None and t.decision is not None and not t.note
    ]
    if not ahead:
        return []
    planned = pace * sum(t.decision.estimate.seconds for t in ahead if not t.dropped)
    cut = any(t.decision.action != "run" for t in ahead)
    if planned <= available and not (cut and planned < (1.0 - REPLAN_SLACK) * available):
        return []
    decisions = budget_mod.fit_to_budget(
        [t.estimate for t in ahead],
        max(available, 0.0),
        reserve_fraction=0.0,
        worths=[t.worth for t in ahead] if all(t.worth for t in ahead) else None,
        labels=[t.label for t in ahead],
        requires=_requires([*tasks[:start], *ahead], start),
        pace=pace,
        order=sorted(range(len(ahead)), key=lambda k: ahead[k].decision.rank),
    )
    changes = []
    for task, new in zip(ahead, decisions, strict=True):
        old = task.decision
        new.rank = old.rank  # the first plan's value order stands
        task.decision = new
        if (old.action, old.changes) == (new.action, new.changes):
            continue
        _apply(task, new)
        changes.append(_change(task, old, new))
    return changes


def _change(task: Task, old: budget_mod.Decision, new: budget_mod.Decision) -> str:
    if new.dropped:
        return f"{task.label} dropped"
    if old.dropped:
        return f"{task.label} re-added" + (f" ({_length(task)})" if new.changes else "")
    verb = "shortened to" if new.action == "shortened" else "back to"
    return f"{task.label} {verb} {_length(task)}"


def _length(task: Task) -> str:
    if task.tuned and task.tune is not None:
        return f"{task.tune['max_trials']} trials of {task.tune['epochs']} epochs"
    return epochs_text(task.training["epochs"])


class Replanner:
    """The plan kept honest as the run goes: after each task the runner reports how long it took
    and the metrics of the members it trained; this keeps the run's pace (``budget.Pace``: only
    tasks that trained count, not members kept from the store), re-fits the tasks not yet
    started (:func:`replan`), and teaches the calibration file what it saw (the accuracy reached,
    for later plans' values; epochs much faster than the probe, which replace a loaded probe)."""

    def __init__(
        self, tasks: list[Task], data, budget_seconds: float | None, *, replanning: bool = True
    ):
        self.tasks = tasks
        self.data = data
        self.budget_seconds = budget_seconds
        self.replanning = replanning and budget_seconds is not None
        self.pace = budget_mod.Pace()

    def finished(
        self, index: int, seconds: float, trained: list[dict[str, Any]], remaining: float
    ) -> str:
        """``tasks[index]`` took ``seconds`` and trained members with these ``metrics.json``
        contents ([] when it trained nothing); ``remaining`` seconds of budget are left. Returns
        the progress line to print when the plan changed, else ""."""
        task = self.tasks[index]
        if trained:
            self._learn(task, trained)
            if task.decision is not None and not task.note and task.decision.estimate.seconds > 0:
                self.pace.add(task.decision.estimate.seconds, seconds)
        if not self.replanning:
            return ""
        available = remaining - budget_mod.RESERVE_FRACTION * float(self.budget_seconds)
        changes = replan(self.tasks, index + 1, self.pace.factor, available)
        return f"re-planned: {self.pace.describe()}; {', '.join(changes)}" if changes else ""

    def _learn(self, task: Task, trained: list[dict[str, Any]]) -> None:
        from benchmark.plan import value

        done = [
            m for m in trained if m.get("status") == "done" and m.get("val_accuracy") is not None
        ]
        if not done:
            return
        try:
            spec = task.probe_spec or probe_spec(task, self.data)
            best = max(done, key=lambda m: float(m["val_accuracy"]))
            budget_mod.record_accuracy(
                spec,
                value.recipe_key(task, self.data),
                {
                    "val_accuracy": float(best["val_accuracy"]),
                    "epochs": int(best.get("epochs") or 1),
                    "train_images": len(self.data.y_train),
                    "num_classes": int(self.data.num_classes),
                },
            )
            est = task.decision.estimate if task.decision is not None else None
            if (
                task.spec.strategy is None
                and not task.tuned
                and est is not None
                and est.epoch_seconds > 0
            ):
                live = [  # the first epoch's compile left out where the member measured it
                    (float(m["train_seconds"]) - float(m.get("compile_seconds") or 0.0))
                    / int(m["epochs"])
                    for m in done
                    if m.get("train_seconds") and m.get("epochs")
                ]
                if live and budget_mod.observe_epochs(spec, est.epoch_seconds / min(live)):
                    log.info(
                        "%s trained %.1fx faster than its probe: the probe is replaced",
                        task.label,
                        est.epoch_seconds / min(live),
                    )
        except Exception as exc:  # noqa: BLE001 - learning is a bonus; it must not end a run
            log.warning("could not record what %s reached: %s", task.label, short_error(exc))


def epochs_text(epochs: int) -> str:
    return f"{epochs} epoch{'' if int(epochs) == 1 else 's'}"


def tune_summary(tune: dict) -> str:
    return f"{tune['algorithm']} x{tune['max_trials']} ({tune['epochs']} ep)"


def _apply(task: Task, decision: budget_mod.Decision) -> None:
    """Make the task as long as ``decision`` says: from what the profile asked, so a re-plan can
    lengthen a task it shortened before."""
    if task.asked:
        task.training = dict(task.asked["training"])
        if task.asked["tune"] is not None:
            task.tune = dict(task.asked["tune"])
    changes = decision.changes
    if "epochs" in changes:
        task.training["epochs"] = changes["epochs"]
    if task.tune is not None:
        if "trials" in changes:
            task.tune["max_trials"] = changes["trials"]
            task.tune["top_k"] = min(task.tune["top_k"], changes["trials"])
        if "trial_epochs" in changes:
            task.tune["epochs"] = changes["trial_epochs"]
